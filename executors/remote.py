"""The judge's view of a program: a session with its sandboxed child, and proxies for its objects.

Test code runs in the judge (`executors.judge`); every name of the program it reads is a
`Remote` proxy, and everything it does with one (call it, read an attribute, compare, iterate,
`isinstance`) becomes a request the worker relays to the child. Answers are plain values
(exact builtins, decoded under the value caps) or more proxies; a program's exception is raised
here as its nearest builtin exception class, so `except ValueError` in test code still works.

What a program cannot do from here: decide an operation on a value the judge made. A proxy
compared with a plain value is simply not equal to it (ordering and arithmetic with one raise
TypeError), whatever its class's `__eq__` or `__sub__` says, and `x in proxy` iterates the
proxy and compares here: otherwise `assert f(x) == y`, `abs(f(x) - y) < 1e-6` or `y in f(x)`
would pass for an object that answers "yes" to anything. Between two of the program's own
objects, operators are the program's, as in Python. What needs no judge value (truth, len,
iteration, attributes, calls, str) is the program's answer too, as in Python: worth no more
than returning that answer as a plain value.
"""
import builtins
import contextlib
import json
import signal
import sys
import time

from executors import protocol, values

# Modules whose functions and classes test code may pass to the program by name.
_SHARED_MODULES = frozenset({"math", "cmath", "operator", "collections", "itertools", "functools",
                             "heapq", "bisect", "string", "re", "fractions", "decimal",
                             "datetime", "statistics", "copy"})
_CHUNK = 256           # iterator items fetched per round trip, at most
_MIN_BUDGET = 0.001    # seconds: a request is never sent with less
_WORKER_OPS = frozenset({"job", "end", "stop", "stdio"})  # answered by the worker itself
NOTHING = object()     # Session.last before the test called into the program


class ProgramTimeout(BaseException):
    """The program did not answer within the test's (or the whole program's) time limit.
    A BaseException: test code's `except Exception` must not swallow it."""

    def __init__(self, which):
        super().__init__(which)
        self.which = which


class ProgramCrashed(BaseException):
    """The program's process died, or broke its result channel, while answering."""


class ValueNotSent(BaseException):
    """The program's answer cannot cross the boundary (over the value caps)."""


class WorkerLost(BaseException):
    """The worker stopped answering (it died or hung): not something a program can cause from
    inside the sandbox, so the job is given up here and retried by the pool on a fresh slot."""


class RemoteError(Exception):
    """A program's exception with no builtin counterpart to raise in its place."""


class Session:
    """Requests to one program's child, through the worker, under the current test's deadline.

    `send(msg)` writes a frame to the worker; `reader` reads its answers. Every request carries
    a fresh nonce; answers with another nonce (stale, or forged) are dropped.
    """

    def __init__(self, send, reader, limits, deadline, rng):
        self.send = send
        self.reader = reader
        self.limits = limits
        self.deadline = deadline        # the program's (time.monotonic)
        self.test_deadline = deadline
        self.rng = rng
        self.gen = 0                    # the child generation answers come from
        self.last = NOTHING             # raw encoding of the last value a call returned
        self.last_plain = False         # ... and whether it held no handles (an `actual`)
        self._proxies = {}
        self.handles_seen = 0
        self.lost = False

    # -- transport --------------------------------------------------------------------------
    def begin_test(self):
        self.test_deadline = min(self.deadline, time.monotonic() + self.limits.per_test_timeout)
        self.last = NOTHING

    def budget(self):
        left = self.test_deadline - time.monotonic()
        if left < _MIN_BUDGET:
            raise ProgramTimeout("test" if self.test_deadline < self.deadline else "program")
        return left

    def exchange(self, msg, count=1, budget=None):
        """Send `msg` and yield the worker's `count` answers (fewer if the child stopped). A
        caller that closes the generator before the last answer has the worker stop the work
        on the rest (`_abandon`), so none of it runs on or reaches a later request. Requests
        for the child go as relayed frames (the worker reads only their head), and so come
        its answers: they are parsed here, once."""
        nonce = self.rng.getrandbits(63)
        b = budget if budget is not None else self.budget()
        if msg.get("op") in _WORKER_OPS:
            request = dict(msg, n=nonce, b=b)
        else:
            request = protocol.relayed({"n": nonce, "b": b, "k": count}, protocol.dumps(msg))
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        done = False
        try:
            try:
                self.send(request)
            except OSError as e:
                self.lost = True
                raise WorkerLost(f"cannot write to the worker ({e.strerror})") from None
            got = 0
            while got < count:
                # the worker answers within the budget it was given (it kills the child
                # otherwise); the slack only covers its own bookkeeping
                head, body = self._read(max(self.deadline, time.monotonic() + b) + 30.0)
                if head.get("n") != nonce:
                    continue
                if "g" in head:
                    self.gen = head["g"]
                answers = head if body is None else _answers(head, body)
                if answers is None:  # the child's answer does not parse: its doing
                    done = got + (head.get("k") or 1) >= count
                    yield {"crash": "a malformed answer", "i": head.get("i", 0)}
                    return
                if type(answers) is list:  # answers of a "calls" request
                    first = head.get("i", 0)
                    got += len(answers)
                    done = got >= count
                    for k, item in enumerate(answers):
                        item["i"] = first + k
                        item["g"] = self.gen
                        yield item
                    continue
                got += 1
                done = got >= count or "timeout" in answers or "crash" in answers
                yield answers
                if "timeout" in answers or "crash" in answers:
                    return
        finally:
            try:
                if not done and not self.lost:
                    self._abandon()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _read(self, deadline):
        """(head, body) of the worker's next frame (body None: a plain frame, all in head)."""
        try:
            return protocol.split_relayed(self.reader.read(deadline, raw=True))
        except (protocol.ChannelError, protocol.Timeout) as e:
            self.lost = True
            raise WorkerLost(f"{type(e).__name__}: {e}") from None

    def _abandon(self):
        """Tell the worker to stop the request it is still answering (it ends the child's
        work on it at once) and skip what it sent until it acknowledges, so no late answer
        stays in the channel. Fail fast ends a batch this way at its first failure."""
        nonce = self.rng.getrandbits(63)
        try:
            self.send({"op": "stop", "n": nonce, "b": 1.0})
        except OSError as e:
            self.lost = True
            raise WorkerLost(f"cannot write to the worker ({e.strerror})") from None
        deadline = time.monotonic() + self.limits.per_test_timeout + 30.0
        while self._read(deadline)[0].get("n") != nonce:
            pass

    def notify(self, msg):
        """Send `msg` without waiting for its answer."""
        try:
            self.send(dict(msg, n=self.rng.getrandbits(63), b=1.0))
        except OSError as e:
            self.lost = True
            raise WorkerLost(f"cannot write to the worker ({e.strerror})") from None

    def answer(self, msg, budget=None):
        """The worker's one answer to `msg` (a crash report if none came)."""
        return next(iter(self.exchange(msg, budget=budget)), None) or {"crash": "no answer"}

    def request(self, msg):
        return self.result(self.answer(msg))

    # -- answers ----------------------------------------------------------------------------
    def result(self, frame):
        """The value an answer carries; raises what it reports instead."""
        if "timeout" in frame:
            raise ProgramTimeout(str(frame["timeout"]))
        if "crash" in frame:
            raise ProgramCrashed(str(frame["crash"]))
        if "e" in frame:
            raise program_exception(frame["e"])
        if "u" in frame:
            raise ValueNotSent(f"the program's answer cannot be judged: {frame['u']}")
        if "v" not in frame:
            raise ProgramCrashed("a malformed answer")
        return self.decode(frame["v"])

    def decode(self, raw):
        try:
            return values.decode(raw, handles=self._proxy)
        except values.TooLarge as e:
            raise ValueNotSent(str(e)) from None
        except ValueError as e:
            raise ProgramCrashed(f"a malformed answer ({e})") from None

    def describe(self, raw):
        """Short text of an encoded value for messages (never raises)."""
        try:
            value = values.decode(raw, handles=lambda p: _Described(p))
        except Exception:
            return "<a value that cannot be shown>"
        from executors.judge import short

        return short(value)

    def _proxy(self, payload):
        if type(payload) is not list or len(payload) != 3 or type(payload[0]) is not int:
            raise ValueError("bad handle")
        self.handles_seen += 1
        key = (self.gen, payload[0])
        proxy = self._proxies.get(key)
        if proxy is None:
            h = payload[2] if type(payload[2]) is int else None
            proxy = Remote(self, payload[0], str(payload[1])[:200], h)
            self._proxies[key] = proxy
        return proxy

    def encode(self, value):
        """A judge-side value as an argument for the program: plain values, or its own objects."""
        try:
            return values.encode(value, handles=self._ref)
        except values.UnsupportedValue as e:
            raise TypeError(f"cannot pass this value to the program: {e}") from None

    def _ref(self, obj):
        if type(obj) is Remote and obj._session is self:
            return obj._ref_payload()
        name = getattr(obj, "__qualname__", None)
        if type(name) is str and getattr(builtins, name, None) is obj:
            return ["b", name]  # a builtin type or function (`remove_datatype(t, int)`)
        module = getattr(obj, "__module__", None)
        if type(name) is str and module in _SHARED_MODULES and _resolve(module, name) is obj:
            return ["s", module, name]  # a stdlib function or class, e.g. `operator.itemgetter`
        raise values.UnsupportedValue(
            f"{type(obj).__module__}.{type(obj).__qualname__} (only plain values and the "
            "program's own objects can be passed to it)")

    # -- operations -------------------------------------------------------------------------
    def call(self, target, args, kwargs):
        msg = {"op": "call", "f": target._ref_payload(), "a": self.encode(list(args))}
        if kwargs:
            msg["k"] = self.encode(dict(kwargs))
        frame = self.answer(msg)
        seen = self.handles_seen
        value = self.result(frame)
        self.last, self.last_plain = frame["v"], self.handles_seen == seen
        return value

    def op(self, name, *args):
        return self.request({"op": name, "a": self.encode(list(args))})

    def calls(self, name, arg_lists, budget, packed=True):
        """Answers for name(*args) for each of `arg_lists` (encoded), one request, each call
        within `budget` seconds: yields (index, answer frame) until one times out or crashes.
        `packed`: the child may send several answers per frame (it then sends them only every
        few ms, so a timeout is known to lie at or after the first unanswered call)."""
        msg = {"op": "calls", "f": ["g", name], "a": arg_lists, "p": packed}
        with contextlib.closing(self.exchange(msg, count=len(arg_lists), budget=budget)) as frames:
            for frame in frames:
                yield frame.get("i"), frame


def _answers(head, body):
    """What a relayed frame from the child carries: a list of answers (a "calls" frame, head
    {"i": first, "k": count}) or one answer, with the worker's head fields; None if the body
    is not that (the child encodes it, so it may be anything)."""
    try:
        answers = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if "i" in head:
        ok = type(answers) is list and len(answers) == head.get("k") and all(
            type(a) is dict for a in answers)
        return answers if ok and answers else None
    if type(answers) is not dict:
        return None
    answers.update(g=head.get("g"), dt=head.get("dt"))
    return answers


class _Described:
    """A handle shown in a message, without asking the program anything."""

    def __init__(self, payload):
        self.name = str(payload[1]) if type(payload) is list and len(payload) == 3 else "object"

    def __repr__(self):
        return f"<{self.name} object>"


def _resolve(module, qualname):
    obj = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj


def program_exception(info):
    """An exception to raise in test code for one the program raised: the builtin class it
    derives from (its message kept), or RemoteError; `_remote` keeps what the child reported."""
    info = info if isinstance(info, dict) else {}
    name, msg = str(info.get("type", "Exception"))[:200], str(info.get("msg", ""))
    base = getattr(builtins, str(info.get("base", "")), None)
    exc = None
    if isinstance(base, type) and issubclass(base, Exception):
        try:
            exc = base(msg)
        except Exception:
            exc = None
    if exc is None:
        exc = RemoteError(f"{name}: {msg}" if msg else name)
    exc._remote = {"type": name, "msg": msg, "tb": str(info.get("tb", ""))}
    return exc


class Remote:
    """One of the program's objects, seen from the judge. See the module docstring."""

    __slots__ = ("_session", "_id", "_type", "_hash", "_gen", "__weakref__")

    def __init__(self, session, ref, type_name, hash_value, gen=None):
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_id", ref)          # a handle id, or a global's name
        object.__setattr__(self, "_type", type_name)
        object.__setattr__(self, "_hash", hash_value)
        object.__setattr__(self, "_gen", session.gen if gen is None else gen)

    @classmethod
    def global_name(cls, session, name):
        """The program's global `name`, looked up in the child whenever it is used."""
        return cls(session, name, name, None, gen=-1)

    def _ref_payload(self):
        if self._gen == -1:
            return ["g", self._id]
        if self._gen != self._session.gen:
            raise ProgramCrashed(f"a {self._type} object from a run of the program that was "
                                 "restarted (after a timeout or a crash) is gone")
        return self._id

    def _op(self, name, *args):
        return self._session.op(name, self, *args)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)  # protocol probes (copy, pickle) stay local
        return self._op("getattr", name)

    def __setattr__(self, name, value):
        self._op("setattr", name, value)

    def __delattr__(self, name):
        self._op("delattr", name)

    def __call__(self, *args, **kwargs):
        return self._session.call(self, args, kwargs)

    def __format__(self, spec):
        return self._op("format", spec)

    def _hash_value(self):
        if self._gen == -1:
            return self._op("hash")
        if self._hash is None:
            raise TypeError(f"unhashable type: '{self._type}'")
        return self._hash

    def __iter__(self):
        return _RemoteIterator(self._op("iter"))

    def __next__(self):
        items, _ = self._session.request({"op": "next", "o": self._ref_payload(), "k": 1})
        if not items:
            raise StopIteration
        return items[0]

    def __contains__(self, item):
        return any(x is item or x == item for x in self)  # compared here: see the module doc

    def __getitem__(self, key):
        return self._op("getitem", key)

    def __setitem__(self, key, value):
        self._op("setitem", key, value)

    def __delitem__(self, key):
        self._op("delitem", key)

    def __instancecheck__(self, obj):
        return self._session.op("isinstance", obj, self)

    def __round__(self, *n):
        return self._op("round", *n)


def _binary(name):
    def forward(self, other):
        if type(other) is not Remote:
            return NotImplemented
        return self._session.op(name, self, other)

    def reflected(self, other):
        if type(other) is not Remote:
            return NotImplemented
        return self._session.op(name, other, self)

    return forward, reflected


def _unary(name):
    def forward(self):
        return self._op(name)

    return forward


for _dunder, _name in (("int", "int"), ("float", "float"), ("complex", "complex"),
                       ("index", "index"), ("neg", "neg"), ("pos", "pos"), ("abs", "abs"),
                       ("invert", "invert"), ("repr", "repr"), ("str", "str"), ("bool", "truth"),
                       ("len", "len")):
    setattr(Remote, f"__{_dunder}__", _unary(_name))


def _comparison(name):
    def compare(self, other):
        return self._op(name, other) if type(other) is Remote else NotImplemented

    return compare


for _name in ("eq", "ne", "lt", "le", "gt", "ge"):  # only between the program's own objects
    setattr(Remote, f"__{_name}__", _comparison(_name))
Remote.__hash__ = Remote._hash_value  # (defining __eq__ above would otherwise unset it)

for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "lshift",
              "rshift", "and_", "or_", "xor", "divmod"):
    _dunder = _name.rstrip("_")
    _fwd, _ref = _binary(_name)
    setattr(Remote, f"__{_dunder}__", _fwd)
    setattr(Remote, f"__r{_dunder}__", _ref)


class _RemoteIterator:
    """Iterates one of the program's iterators, fetching items in growing chunks (one round
    trip for the first item, then up to _CHUNK at a time)."""

    def __init__(self, it):
        self.it, self.buffer, self.done, self.chunk = it, [], False, 1

    def __iter__(self):
        return self

    def __next__(self):
        if not self.buffer:
            if self.done:
                raise StopIteration
            if type(self.it) is not Remote:  # the program's __iter__ gave a plain value
                raise TypeError(f"iter() returned non-iterator of type '{type(self.it).__name__}'")
            items, self.done = self.it._session.request(
                {"op": "next", "o": self.it._ref_payload(), "k": self.chunk})
            self.buffer = list(items)[::-1]
            self.chunk = min(_CHUNK, self.chunk * 4)
            if not self.buffer:
                raise StopIteration
        return self.buffer.pop()
