"""Runs inside the sandbox, in a child forked from the worker: loads one program and answers the
judge's requests about it.

It never sees test code or expected values. It runs the program's top level, reports the names
the program defined, then serves the requests the worker relays from the judge (`executors.remote`
sends them): call a function, read an attribute, apply an operator, test isinstance. Each answer
is a value in the closed type set, or a handle to an object the child keeps (values.encode), sent
over the dedicated, authenticated result pipe. A stdio program instead runs once as __main__.

Stdlib only: this module is imported inside the sandbox.
"""
import builtins
import io
import linecache
import operator
import os
import signal
import sys
import time
import traceback
import types

from executors import audit
from executors import limits as limits_mod
from executors import protocol, values

PROGRAM_FILE = "<solution>"
STDIN_FILE, STDOUT_FILE, STDERR_FILE = ".stdin", ".stdout", ".stderr"  # stdio tests, in the cwd
_TB_LINES = 6
_MAX_MSG = 2000

_HARNESS_FILES = frozenset({__file__, values.__file__})


def exception_info(exc, skip=_HARNESS_FILES):
    """Type, message and the last traceback lines of an exception, without trusting its methods."""
    try:
        msg = str(exc)
    except BaseException:  # a program's exception whose __str__ raises
        msg = "<unprintable message>"
    if type(msg) is not str:
        msg = "<unprintable message>"
    if isinstance(exc, SyntaxError) and type(exc.text) is str and exc.text.strip():
        msg = f"{msg}\n    {exc.text.strip()}"
    try:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename not in skip]
        tb = "".join(traceback.format_list(frames[-_TB_LINES:]))
    except BaseException:
        tb = ""
    return {"type": str(type(exc).__name__), "msg": msg[:_MAX_MSG], "tb": tb[-_MAX_MSG:]}


def _format_exception(exc):
    """Traceback text as Python would print it, minus the harness's own frames."""
    try:
        te = traceback.TracebackException.from_exception(exc)
        te.stack = traceback.StackSummary.from_list(
            [f for f in te.stack if f.filename not in _HARNESS_FILES])
        return "".join(te.format())
    except BaseException:
        return f"{type(exc).__name__}\n"


def make_sender(fd, sign, _encode=protocol.encode_frame, _dumps=protocol.dumps,
                _relayed=protocol.relayed, _write=protocol.write_all):
    """A function that signs and writes one frame to the result pipe: `obj` alone, or with
    `head` as a relayed frame (the worker reads the head only and passes `obj` on)."""
    seq = [0]

    def send(obj, head=None):
        payload = _dumps(obj) if head is None else _relayed(head, _dumps(obj))
        frame = _encode(payload, sign, seq[0])
        seq[0] += 1
        _write(fd, frame)

    return send


def _register_source(filename, source, _cache=linecache.cache):
    lines = source.splitlines(True)
    _cache[filename] = (len(source), None, lines, filename)


# The code below takes what it calls as default arguments, bound at import: a program that
# rebinds builtins or this module's globals does not change how requests are answered.

# What the judge may ask of a program's object (`executors.remote` maps Python's protocols here).
OPERATIONS = {name: getattr(operator, name) for name in (
    "eq", "ne", "lt", "le", "gt", "ge", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow",
    "matmul", "lshift", "rshift", "and_", "or_", "xor", "neg", "pos", "abs", "invert", "contains",
    "getitem", "setitem", "delitem", "index", "truth")}
OPERATIONS.update(len=len, hash=hash, repr=repr, str=str, int=int, float=float, complex=complex,
                  round=round, divmod=divmod, format=format, iter=iter, getattr=getattr,
                  setattr=setattr, delattr=delattr, isinstance=isinstance)
_MAX_NAMES = 10_000
_PACK_SECONDS = 0.002  # answers of a "calls" request gathered per frame, at most this long
_ONE = {"k": 1}  # the head of a frame with one answer
_NAME_VALUE_NODES = 10_000  # a global bigger than this is reported as a handle, read on demand
_qualname = type.__dict__["__qualname__"].__get__
_mro = type.__dict__["__mro__"].__get__


def _builtin_exception(exc_type, _mro=_mro, _builtins=builtins):
    """Name of the first builtin exception class `exc_type` derives from (the judge raises that:
    a program's `class Bad(ValueError)` is still caught by the test's `except ValueError`)."""
    for klass in _mro(exc_type):
        name = _qualname(klass)
        if getattr(_builtins, name, None) is klass:
            return name
    return "Exception"


class Objects:
    """The objects the judge holds handles to, by handle id (the same object, the same id)."""

    def __init__(self, ns, caps):
        self.ns = ns
        self.caps = caps
        self.by_id = {}
        self.ids = {}

    def handle(self, obj, _id=id, _type=type, _qualname=_qualname, _hash=hash):
        key = _id(obj)
        hid = self.ids.get(key)
        if hid is None:
            hid = len(self.by_id)
            self.by_id[hid] = obj
            self.ids[key] = hid
        try:
            h = _hash(obj)
        except BaseException:
            h = None
        return [hid, str(_qualname(_type(obj)))[:200], h]

    def lookup(self, ref, _type=type, _import=__import__, _builtins=builtins):
        """An object from a reference: a handle id, ["g", name] for a global of the program,
        ["b", name] for a builtin, ["s", module, qualname] for a stdlib object."""
        if _type(ref) is int and ref in self.by_id:
            return self.by_id[ref]
        if _type(ref) is list and ref and all(_type(part) is str for part in ref):
            if ref[0] == "g" and len(ref) == 2:
                try:
                    return self.ns[ref[1]]
                except KeyError:
                    raise NameError(f"name {ref[1]!r} is not defined") from None
            if ref[0] == "b" and len(ref) == 2:
                return getattr(_builtins, ref[1])
            if ref[0] == "s" and len(ref) == 3:
                obj = _import(ref[1], fromlist=["_"])
                for part in ref[2].split("."):
                    obj = getattr(obj, part)
                return obj
        raise ValueError("unknown object reference (from a run that was restarted?)")

    def encode(self, v, _encode=values.encode, _unsupported=values.UnsupportedValue):
        try:
            return {"v": _encode(v, handles=self.handle, **self.caps)}
        except _unsupported as e:
            return {"u": str(e)}
        except RecursionError:
            return {"u": "value nested too deeply"}

    def decode(self, x, _decode=values.decode):
        return _decode(x, handles=self.lookup)


# The standard library's own objects, by (id, name), recorded by the worker before any program
# ran (see snapshot_stdlib): `from collections import Counter` in a program is reported as that,
# so test code that uses the program's `Counter` gets the judge's own, not whatever the program
# may have put in its place. (Values hold their objects: no id is ever reused.)
_STDLIB = {}


def snapshot_stdlib(modules):
    """Record the public functions and classes of the (already imported) `modules`."""
    for modname in modules:
        module = sys.modules.get(modname)
        for name, obj in list(vars(module).items()) if module is not None else ():
            if not name.startswith("_") and callable(obj):
                _STDLIB.setdefault((id(obj), name), (obj, modname))


def describe_names(ns, objects, _type=type, _module=types.ModuleType, _encode=values.encode,
                   _id=id, _stdlib=_STDLIB):
    """What the program defined, for the judge: ["m", module name] for an imported module and
    ["s", module name] for a stdlib object under its own name (the judge uses its own copies of
    those it trusts), ["v", value] for a small plain value, ["g"] for anything else (reached by
    name, through the child)."""
    out = {}
    for name, v in list(ns.items())[:_MAX_NAMES]:
        if _type(name) is not str or name.startswith("__"):
            continue
        known = _stdlib.get((_id(v), name))
        if known is not None:
            out[name] = ["s", known[1]]
            continue
        if _type(v) is _module:
            modname = v.__dict__.get("__name__")  # an exact module: no __getattr__ of the program's
            out[name] = ["m", modname] if _type(modname) is str else ["g"]
            continue
        try:
            out[name] = ["v", _encode(v, max_nodes=_NAME_VALUE_NODES)]
        except (values.UnsupportedValue, RecursionError):
            out[name] = ["g"]
    return out


def answer(request, objects, _ops=OPERATIONS, _builtin=_builtin_exception, _info=exception_info):
    """The answer to one request: {"v": value} | {"u": why it cannot be sent} | {"e": exception}."""
    try:
        op = request["op"]
        if op == "call":
            fn = objects.lookup(request["f"])
            args = objects.decode(request.get("a", []))
            kwargs = objects.decode(request.get("k", {"d": []}))
            result = fn(*args, **kwargs)
        elif op == "next":  # up to `n` items of an iterator, and whether it is exhausted
            it, n, items = objects.lookup(request["o"]), int(request["k"]), []
            result = None
            for _ in range(n):
                try:
                    items.append(next(it))
                except StopIteration:
                    result = (items, True)
                    break
            if result is None:
                result = (items, False)
        else:
            fn = _ops[op]
            result = fn(*objects.decode(request.get("a", [])))
    except BaseException as e:
        info = _info(e)
        info["base"] = _builtin(type(e))
        return {"e": info}
    return objects.encode(result)


def serve(requests, send, objects, _answer=answer, _clock=time.perf_counter):
    """Answer requests until the worker closes the pipe. A "calls" request (one function over
    many argument lists: EvalPlus inputs) is answered in relayed frames, head {"i": first,
    "k": count}, body the list of answers;
    with "p" (pack) set, a frame goes out once _PACK_SECONDS have passed since the last one,
    else after every call. The first answer always goes alone, at once: a program that fails
    its first test (most wrong ones) is stopped before it computes the rest. Each frame
    restarts the worker's clock."""
    while True:
        try:
            request = requests.read()
        except protocol.ChannelError:
            return
        if request.get("op") != "calls":
            send(_answer(request, objects), _ONE)
            continue
        f, arg_lists, packed = request["f"], request["a"], bool(request.get("p"))
        pack, first, flushed = [], 0, _clock()
        for i in range(len(arg_lists)):
            t0 = _clock()
            reply = _answer({"op": "call", "f": f, "a": arg_lists[i]}, objects)
            now = _clock()
            reply["dt"] = now - t0
            pack.append(reply)
            if not packed or i == 0 or now - flushed >= _PACK_SECONDS or i == len(arg_lists) - 1:
                send(pack, {"i": first, "k": len(pack)})
                first, pack, flushed = i + 1, [], now


def _run_as_main(code, result_fd):
    """Run a stdio program as __main__ with fds 0/1/2 on the worker's files. Never returns:
    the exit status is the verdict's input, and the worker reads the output files itself."""
    status = 1
    try:
        os.close(result_fd)
        for fd, (name, flags) in enumerate(((STDIN_FILE, os.O_RDONLY),
                                            (STDOUT_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                            (STDERR_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC))):
            opened = os.open(name, flags, 0o600)
            os.dup2(opened, fd)
            os.close(opened)
        sys.stdin = io.TextIOWrapper(io.open(0, "rb", closefd=False), encoding="utf-8")
        sys.stdout = io.TextIOWrapper(io.open(1, "wb", closefd=False), encoding="utf-8")
        sys.stderr = io.TextIOWrapper(io.open(2, "wb", closefd=False), encoding="utf-8",
                                      errors="backslashreplace", line_buffering=True)
        try:
            exec(code, {"__name__": "__main__", "__builtins__": builtins})
            status = 0
        except SystemExit as e:
            if e.code is None or e.code == 0:
                status = 0
            elif type(e.code) is int:
                status = e.code & 0xFF or 1
            else:
                sys.stderr.write(f"{e.code}\n")
        except BaseException as e:
            sys.stderr.write(_format_exception(e))
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                status = status or 1
    finally:
        os._exit(status)


def run(job, send, result_fd, requests, _info=exception_info, _clock=time.perf_counter,
        _compile=compile, _exec=exec):
    """Load the program, report "load" (with its names), then answer requests (or, for a stdio
    program, run it once as __main__)."""
    limits = limits_mod.Limits.from_dict(job["limits"])
    ns = {"__name__": "solution", "__builtins__": builtins}
    _register_source(PROGRAM_FILE, job["code"])
    t0 = _clock()
    try:
        code = _compile(job["code"], PROGRAM_FILE, "exec")
        if not job.get("stdio"):
            _exec(code, ns)
            if job.get("setup"):  # MBPP order: test_setup_code may define what the program uses
                _exec(_compile(job["setup"], "<setup>", "exec"), ns)
    except BaseException as e:
        send({"t": "load", "e": _info(e), "dt": _clock() - t0})
        return
    if job.get("stdio"):
        send({"t": "load", "dt": _clock() - t0})
        _run_as_main(code, result_fd)
    objects = Objects(ns, {"max_chars": limits.max_value_chars})
    send({"t": "load", "dt": _clock() - t0, "names": describe_names(ns, objects)})
    serve(requests, send, objects)


def _close_other_fds(keep):
    """Close every inherited descriptor above stderr except those in `keep` (the worker's pipes)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: the slow way
        fds = range(3, 1 << 16)
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the descriptor listdir itself used


def main(job, result_fd, request_fd, key_fd, workdir, isolated):
    """Entry point in the freshly forked child. Never returns."""
    status = 0
    try:
        key = os.read(key_fd, 64)
        os.close(key_fd)
        send = make_sender(result_fd, protocol.make_signer(key))
        del key
        _close_other_fds((result_fd, request_fd))
        os.set_inheritable(result_fd, False)
        os.set_inheritable(request_fd, False)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        # (no setsid: it costs ~3 ms; the worker has its own session. The environment and the
        # other signal dispositions were set once in the worker.)
        os.chdir(workdir)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if not isolated:
            # without a pid namespace nothing kills us if the worker itself dies: a backstop
            signal.alarm(int(job["cpu_seconds"]) + 5)
        limits = limits_mod.Limits.from_dict(job["limits"])
        limits_mod.apply_rlimits(limits, job["cpu_seconds"])
        audit.install_audit_hook(None if isolated else workdir, home=workdir)
        run(job, send, result_fd, protocol.FrameReader(request_fd))
    except BaseException:
        status = 70
    finally:
        os._exit(status)
