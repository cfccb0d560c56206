"""The judge process: runs each program's tests, trusted, and decides every verdict.

One per pool slot, started by the pool as `python -m executors.judge`; it starts the slot's
sandboxed worker itself and is the only process that talks to it. It never runs program code
and the program cannot reach it (outside the sandbox's namespaces, non-dumpable, its own memory
limit; the pool watches its deadlines). Test code (assertions, check functions with loops and
helpers, setup code) runs here as ordinary Python, in a namespace where each of the program's
names is a `remote.Remote` proxy: calls into the program cross to the child, and what comes
back is a plain value or another proxy. Expected values and test code never leave this
process. EvalPlus-style call tests go over in one batch per program and are compared here.

Protocol with the pool (length-prefixed frames on stdin/stdout): a config frame, then
"ready"; per job, a job frame (a line of JSON, then a line per test spec: `Judge.parse_job`),
answered by "res" frames carrying [(test index, result)], then "done" with the last ones.
Requests for the child go to the worker as relayed frames (`protocol.relayed`).
"""
import builtins
import collections
import contextlib
import importlib
import json
import linecache
import os
import random
import re
import resource
import signal
import subprocess
import sys
import time
import traceback

from executors import compare, feedback, protocol, values
from executors.limits import Limits
from executors.remote import (NOTHING, ProgramCrashed, ProgramTimeout, Remote, Session,
                              ValueNotSent, WorkerLost)

TEST_FILE = "<test>"
# Modules a program imported that test code may use directly (MBPP tests call math.isclose
# on the program's `import math`): the judge imports its own copy instead of asking the child.
TRUSTED_MODULES = frozenset({
    "math", "cmath", "re", "collections", "itertools", "functools", "heapq", "bisect", "string",
    "random", "operator", "copy", "datetime", "fractions", "decimal", "statistics", "array",
    "typing", "numbers", "json", "numpy", "collections.abc"})
# Classes test code builds expected values with (`Counter('aab')`, `Fraction(6, 1)`): under these
# names a test always gets the real class, whatever a program bound the name to.
_VALUE_CLASS_MODULES = ("collections", "fractions", "decimal", "datetime")
_GRACE = 0.5           # seconds the judge's own work on a test may run past the test's limit
_HARD_GRACE = 0.5      # further CPU seconds before the judge's hard stop (see Judge._guarded)
_FLUSH_EVERY = 0.05    # seconds between result frames to the pool
_BATCH_ITEMS = 512     # call tests per batch request
_BATCH_CHARS = 8 << 20
_CODE_CACHE = 4096
_SPEC_CACHE_BYTES = 32 << 20  # of spec text kept parsed (the judge has its own memory cap)
_PR_SET_DUMPABLE = 4


class JudgeTimeout(BaseException):
    """The judge's own work on a test (test code on the program's values) ran out of time."""


def _alarm(signum, frame):
    raise JudgeTimeout()


# -- results ----------------------------------------------------------------------------------

def result(status, message="", actual=None, traceback_text="", duration=0.0, test=""):
    return {"status": status, "message": message, "actual": actual, "traceback": traceback_text,
            "duration": duration, "test": test}


def short(value, limit=300):
    if type(value) is int and value.bit_length() > 10_000:  # str() of it would be refused
        return f"<int of {value.bit_length():,} bits>"
    if type(value) is Remote:
        return f"<{value._type} object>"
    return feedback.short_repr(value, limit)


def _remote_error(info):
    etype, msg = str(info.get("type", "Exception")), str(info.get("msg", ""))
    return result("error", f"{etype}: {msg}" if msg else etype, traceback_text=str(info.get("tb", "")))


def _timeout(which, limits):
    if which == "load":
        return result("timeout", f"Timed out after {limits.load_timeout:g} s while loading "
                                 "the program")
    if which == "program":
        return result("timeout", "Program time limit exceeded before this test ran")
    return result("timeout", f"Timed out after {limits.per_test_timeout:g} s")


def _too_large(e):
    if isinstance(e, MemoryError):
        return "value too large: the judge ran out of memory comparing it"
    if isinstance(e, values.TooLarge):
        return str(e)
    return f"value too large: {type(e).__name__}: {e}"


# -- test code --------------------------------------------------------------------------------

class Judge:
    """Runs jobs against one worker. `worker_send`/`worker_reader`: the worker's channel."""

    def __init__(self, worker_send, worker_reader):
        self.worker_send = worker_send
        self.worker_reader = worker_reader
        self.rng = random.SystemRandom()
        self.code_cache = collections.OrderedDict()
        self.spec_cache = collections.OrderedDict()  # spec line -> the spec, decoded
        self.spec_bytes = 0
        self.session = None

    def parse_job(self, payload):
        """A job frame (pool._job_frame): a line of JSON, then a line per test spec. A spec
        seen before is taken from the cache, its expected value already decoded: the same
        tests come back with every sample of a problem."""
        head, *lines = payload.split(b"\n")
        job = json.loads(head)
        tests = job["tests"] = []
        for line in lines:
            spec = self.spec_cache.get(line)
            if spec is None:
                spec = self.spec_cache[line] = _decode_expected(json.loads(line))
                self.spec_bytes += len(line)
                while self.spec_bytes > _SPEC_CACHE_BYTES and len(self.spec_cache) > 1:
                    self.spec_bytes -= len(self.spec_cache.popitem(last=False)[0])
            else:
                self.spec_cache.move_to_end(line)
            tests.append(spec)
        return job

    def compiled(self, source):
        """Test code compiled once per distinct source; (code, None) or (None, why)."""
        hit = self.code_cache.get(source)
        if hit is None:
            try:
                hit = (compile(source, TEST_FILE, "exec"), None)
            except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
                hit = (None, f"the test does not parse ({type(e).__name__}: {e})")
            self.code_cache[source] = hit
            if len(self.code_cache) > _CODE_CACHE:
                self.code_cache.popitem(last=False)
        else:
            self.code_cache.move_to_end(source)
        return hit

    def run_job(self, job, emit):
        """Judge every test of `job` from index `start` on; `emit(i, result)` for each (with
        `fail_fast`, "skipped" for those after the first that did not pass)."""
        limits = Limits.from_dict(job["limits"])
        deadline = time.monotonic() + float(job["timeout"])
        session = Session(self.worker_send, self.worker_reader, limits, deadline, self.rng)
        tests = job["tests"]
        todo = list(range(int(job.get("start", 0)), len(tests)))
        if job.get("fail_fast"):
            emit = _stop_at_first_failure(emit, tests, todo)
        stdio = any(t["kind"] == "stdio" for t in tests)
        program = {"op": "job", "code": job["code"], "setup": job.get("setup", ""),
                   "limits": job["limits"], "timeout": job["timeout"], "stdio": stdio}
        try:
            load = session.answer(program, budget=limits.load_timeout)
            if stdio:
                for i in todo:
                    if getattr(emit, "stopped", False):
                        break
                    emit(i, self.stdio_test(tests[i], session, limits))
                return
            failure = self.load_failure(load, limits)
            entries = {t.get("entry") for t in tests} - {None, ""}
            ns = None if failure else self.namespace(load, session, job.get("setup", ""), limits,
                                                     entries)
            if isinstance(ns, dict):
                self.run_tests(tests, todo, ns, session, limits, emit)
                return
            for i in todo:
                emit(i, dict(failure or ns))
        finally:
            self.session = session

    def end_program(self):
        """Have the worker kill what the last program left running (after its verdict went out;
        the worker does it before it reads the next program). Its answer is not waited for: a
        later exchange drops it (another nonce)."""
        session, self.session = self.session, None
        if session is not None and not session.lost:
            session.notify({"op": "end"})

    @staticmethod
    def load_failure(load, limits):
        if "timeout" in load:
            return _timeout(load["timeout"], limits)
        if "crash" in load:
            return result("error", str(load["crash"]))
        if "e" in load:
            return _remote_error(load["e"] if isinstance(load["e"], dict) else {})
        if not isinstance(load.get("names"), dict):
            return result("error", "the program's load report is malformed")
        return None

    def namespace(self, load, session, setup, limits, entries=()):
        """Test code's globals: the program's names as proxies, then the setup code (a failure
        result if setup fails). Never the program's (unless it is a function under test, in
        `entries`): the builtins (`sum` in a test is Python's sum, whatever the program
        defined), the value classes of `_VALUE_CLASS_MODULES` by name, and the modules and
        stdlib objects it imported, when the judge trusts their module (the judge's own copies;
        small plain values are copied too)."""
        ns = {"__name__": "__main__", "__builtins__": builtins}
        value_classes = _value_classes()
        for name, desc in load["names"].items():
            if type(name) is not str or type(desc) is not list or not desc:
                continue
            if name not in entries and (hasattr(builtins, name) or name in value_classes):
                if name in value_classes:
                    ns[name] = value_classes[name]
                continue
            if desc[0] in ("m", "s") and len(desc) == 2 and desc[1] in TRUSTED_MODULES:
                try:
                    module = importlib.import_module(desc[1])
                    ns[name] = module if desc[0] == "m" else getattr(module, name)
                    continue
                except (ImportError, AttributeError):
                    pass
            elif desc[0] == "v" and len(desc) == 2:
                try:
                    ns[name] = values.decode(desc[1])
                    continue
                except ValueError:
                    pass
            ns[name] = Remote.global_name(session, name)
        if setup:
            code, why = self.compiled(setup)
            if code is None:
                return result("error", f"invalid test setup: {why}")
            session.begin_test()
            outcome = self._guarded(lambda: exec(code, ns), session, limits, "")
            if outcome is not None:
                outcome["message"] = f"the test setup failed: {outcome['message']}"
                return outcome
        return ns

    def run_tests(self, tests, todo, ns, session, limits, emit):
        k = 0
        while k < len(todo) and not getattr(emit, "stopped", False):
            test = tests[todo[k]]
            if test["kind"] == "call":  # a run of call tests of one function: one batch
                j = k
                while j < len(todo) and tests[todo[j]]["kind"] == "call" and \
                        tests[todo[j]]["fn"] == test["fn"]:
                    j += 1
                self.call_tests(tests, todo[k:j], session, limits, emit)
                k = j
                continue
            emit(todo[k], self.code_test(test, ns, session, limits))
            k += 1

    def code_test(self, test, ns, session, limits):
        """An assertion, or a check(candidate) function, run here on the program's proxies."""
        code, why = self.compiled(test["source"])
        if code is None:
            return result("error", f"invalid test: {why}")
        linecache.cache[TEST_FILE] = (len(test["source"]), None,
                                      test["source"].splitlines(True), TEST_FILE)
        session.begin_test()
        t0 = time.monotonic()

        def body():
            exec(code, ns)
            if test["kind"] == "check":
                check = ns.get("check")
                if not callable(check):
                    raise _InvalidTest("the test code defines no check(candidate)")
                entry = test["entry"]
                check(ns[entry] if type(ns.get(entry)) is Remote else Remote.global_name(session, entry))

        rename = _check_param(code, test["entry"]) if test["kind"] == "check" else ""
        outcome = self._guarded(body, session, limits, rename)
        if outcome is None:
            plain = session.last is not NOTHING and session.last_plain
            outcome = result("passed", actual=session.last if plain else None)
        outcome["duration"] = time.monotonic() - t0
        return outcome

    def _guarded(self, body, session, limits, rename):
        """Run test code under the test's deadline; None if it finished, else its result."""
        try:
            left = max(0.001, session.test_deadline + _GRACE - time.monotonic())
            # Python-level overruns raise JudgeTimeout; one stuck inside a single C operation
            # (2 ** f(x) on a big int) never reaches a handler, so CPU time past that kills
            # this process outright (SIGPROF's default action) and the pool fails the test.
            signal.setitimer(signal.ITIMER_PROF, left + _HARD_GRACE)
            signal.setitimer(signal.ITIMER_REAL, left)
            try:
                body()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.setitimer(signal.ITIMER_PROF, 0)
        except JudgeTimeout as e:
            return result("failed", "judging the test took longer than its time limit (a value "
                                    "from the program too large to compare?)",
                          test=_test_line(e, rename))
        except WorkerLost:
            raise
        except ProgramTimeout as e:
            return dict(_timeout(e.which, limits), test=_test_line(e, rename))
        except ProgramCrashed as e:
            return result("error", str(e), test=_test_line(e, rename))
        except ValueNotSent as e:
            return result("failed", str(e), test=_test_line(e, rename))
        except _InvalidTest as e:
            return result("error", f"invalid test: {e}")
        except BaseException as e:
            remote = getattr(e, "_remote", None)
            line = _test_line(e, rename)
            if remote is not None:  # raised by the program
                return dict(_remote_error(remote), test=line)
            if isinstance(e, AssertionError):
                if session.last is NOTHING:
                    return result("failed", _exception_text(e), test=line)
                last = session.last
                return result("failed", f"Actual output: {session.describe(last)}",
                              actual=last if session.last_plain else None, test=line)
            if isinstance(e, (OverflowError, MemoryError, RecursionError)):
                return result("failed", _too_large(e), test=line)
            return result("error", _exception_text(e), traceback_text=_test_traceback(e), test=line)
        return None

    def call_tests(self, tests, indices, session, limits, emit):
        """EvalPlus-style tests fn(*args) == expected, sent as batches; compared here."""
        pending = list(indices)
        packed = True
        while pending and not getattr(emit, "stopped", False):
            if time.monotonic() >= session.deadline:
                for i in pending:
                    emit(i, _timeout("program", limits))
                return
            batch = _batch(tests, pending, _BATCH_ITEMS)
            answered, again = 0, False
            # (fail fast: leaving the loop early has the worker stop the rest of the batch)
            with contextlib.closing(session.calls(
                    tests[batch[0]]["fn"], [tests[i]["args"] for i in batch],
                    limits.per_test_timeout, packed)) as frames:
                for k, frame in frames:
                    if k != answered:
                        break
                    if packed and ("timeout" in frame or "crash" in frame):
                        # answers the child was gathering died with it: from here, run again
                        # with one answer per frame, to learn which call it was
                        packed, again = False, True
                        break
                    emit(batch[k], self.call_verdict(tests[batch[k]], frame, session, limits))
                    answered += 1
                    if "timeout" in frame or "crash" in frame or getattr(emit, "stopped", False):
                        break
            if answered == 0 and not again:  # no answer at all: the worker failed it
                emit(batch[0], result("error", "the program gave no answer"))
                answered = 1
            pending = pending[answered:]

    @staticmethod
    def call_verdict(test, frame, session, limits):
        dt = float(frame.get("dt") or 0.0)
        seen = session.handles_seen
        try:
            actual = session.result(frame)
        except ProgramTimeout as e:
            return dict(_timeout(e.which, limits), duration=dt)
        except ProgramCrashed as e:
            return result("error", str(e), duration=dt)
        except ValueNotSent as e:
            return result("failed", f"Actual output is not a plain value: {e}", duration=dt)
        except Exception as e:
            return dict(_remote_error(getattr(e, "_remote", {})), duration=dt)
        raw = frame["v"]
        if session.handles_seen != seen:
            return result("failed", f"Actual output is not a plain value: {short(actual)}",
                          duration=dt)
        if "expected" not in test:
            return result("passed", actual=raw, duration=dt)
        try:
            ok = compare.evalplus_equal(actual, test["expected_value"], test.get("atol", 0.0))
        except (OverflowError, MemoryError, RecursionError) as e:
            return result("failed", _too_large(e), actual=raw, duration=dt)
        if ok:
            return result("passed", actual=raw, duration=dt)
        return result("failed", f"Actual output: {short(actual)}", actual=raw, duration=dt)

    @staticmethod
    def stdio_test(test, session, limits):
        if time.monotonic() >= session.deadline:
            return _timeout("program", limits)
        res = session.answer({"op": "stdio", "stdin": test["stdin"]},
                             budget=limits.per_test_timeout)
        dt = float(res.get("dt") or 0.0)
        if "timeout" in res:
            return dict(_timeout(res["timeout"], limits), duration=dt)
        if "crash" in res:
            return result("error", str(res["crash"]), duration=dt)
        if "e" in res:
            return _remote_error(res["e"] if isinstance(res["e"], dict) else {})
        out = res.get("out")
        if not isinstance(out, str):
            return result("error", "no output was reported", duration=dt)
        if res.get("exit") != 0:
            err = str(res.get("err") or "")
            last = err.strip().splitlines()[-1] if err.strip() else f"exit code {res.get('exit')}"
            return result("error", last, actual=out, traceback_text=err, duration=dt)
        if res.get("trunc"):
            return result("failed", "Output limit exceeded", actual=out, duration=dt)
        if compare.stdio_equal(out, test["expected_stdout"], test.get("float_tol", 1e-6)):
            return result("passed", actual=out, duration=dt)
        return result("failed", f"Actual output: {short(out)}", actual=out, duration=dt)


def _batch(tests, pending, cap):
    """The first tests of `pending` for one request: at most `cap` of them, and _BATCH_CHARS
    of arguments (at least one)."""
    batch, chars = [], 0
    for i in pending[:cap]:
        size = int(tests[i].get("size") or 0)
        if batch and chars + size > _BATCH_CHARS:
            break
        batch.append(i)
        chars += size
    return batch


def _stop_at_first_failure(emit, tests, todo):
    """`emit` that, after the first result that is not a pass, reports the rest as skipped
    (its `stopped` attribute tells the runners to stop)."""
    rest = dict.fromkeys(todo)  # (ordered)

    def emit_until_failure(i, res):
        if emit_until_failure.stopped:
            return
        emit(i, res)
        rest.pop(i, None)
        if res["status"] != "passed":
            emit_until_failure.stopped = True
            for k in rest:
                emit(k, result("skipped", feedback.SKIPPED_AFTER_FAILURE))

    emit_until_failure.stopped = False
    return emit_until_failure


_value_classes_cache = {}


def _value_classes():
    if not _value_classes_cache:
        for modname in reversed(_VALUE_CLASS_MODULES):  # the first module listed wins
            module = importlib.import_module(modname)
            _value_classes_cache.update({name: obj for name, obj in vars(module).items()
                                         if isinstance(obj, type) and not name.startswith("_")})
    return _value_classes_cache


class _InvalidTest(Exception):
    pass


def _exception_text(e):
    try:
        msg = str(e)
    except BaseException:
        msg = ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _test_frames(e):
    if e is None:
        return []
    try:
        return [f for f in traceback.extract_tb(e.__traceback__) if f.filename == TEST_FILE]
    except BaseException:
        return []


def _test_traceback(e):
    return "".join(traceback.format_list(_test_frames(e)[-4:]))


def _check_param(code, entry):
    """"param=entry" for the parameter of the check function `code` defines (its asserts are
    shown with the function's own name), or ""."""
    for const in code.co_consts:
        if hasattr(const, "co_varnames") and const.co_name == "check" and const.co_argcount:
            return f"{const.co_varnames[0]}={entry}"
    return ""


def _test_line(e, rename):
    """The innermost assert line of the test code where `e` happened (check's parameter shown
    as the function's name), or "" when it was not an assert."""
    frames = _test_frames(e)
    if not frames:
        return ""
    line = (frames[-1].line or "").strip()
    if not line.startswith("assert"):
        return ""
    if rename:
        old, new = rename.split("=", 1)
        line = re.sub(rf"\b{re.escape(old)}\b", new, line)
    return line


# -- process ----------------------------------------------------------------------------------

def _harden(memory_mb):
    """Not dumpable (no ptrace, no /proc/<pid>/mem or environ for anyone else of our uid) and
    a memory cap of its own."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if memory_mb:
        limit = int(memory_mb) << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main():
    ctrl_in, ctrl_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    reader = protocol.FrameReader(ctrl_in)

    def send(obj):
        protocol.write_all(ctrl_out, protocol.encode_frame(obj))

    config = reader.read()
    _harden(config.get("memory_mb"))
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGPROF, signal.SIG_DFL)  # the hard stop: see Judge._guarded
    worker = subprocess.Popen(config["worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env=config.get("env"), close_fds=True)
    worker_reader = protocol.FrameReader(worker.stdout.fileno(),
                                         max_frame=int(config.get("max_frame", protocol.MAX_FRAME)))

    def worker_send(obj):  # a message, or a relayed payload (bytes)
        protocol.write_all(worker.stdin.fileno(), protocol.encode_frame(obj))

    try:
        hello = worker_reader.read(time.monotonic() + float(config.get("start_timeout", 60)))
    except (protocol.ChannelError, protocol.Timeout) as e:
        print(f"executors: the sandbox worker did not start ({type(e).__name__}: {e})",
              file=sys.stderr)
        worker.kill()
        return 1
    send({"ready": True, "worker": hello, "worker_pid": worker.pid})
    judge = Judge(worker_send, worker_reader)
    try:
        while True:
            try:
                job = judge.parse_job(reader.read(raw=True))
            except protocol.ChannelError:
                return 0
            buffer, last = [], [time.monotonic()]

            def emit(i, res):
                buffer.append([i, res])
                if time.monotonic() - last[0] >= _FLUSH_EVERY:
                    send({"t": "res", "r": buffer[:]})
                    buffer.clear()
                    last[0] = time.monotonic()

            try:
                judge.run_job(job, emit)
                send({"t": "done", "id": job["id"], "r": buffer})
                judge.end_program()
            except WorkerLost as e:
                print(f"executors: lost the sandbox worker: {e}", file=sys.stderr)
                return 3
    finally:  # EOF lets the worker clean up after itself (its private dir, without namespaces)
        worker.stdin.close()
        try:
            worker.wait(timeout=5)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _decode_expected(test):
    """A spec's expected value arrives encoded (it may be any plain value): decoded once."""
    if "expected" in test:
        test["expected_value"] = values.decode(test["expected"], max_nodes=1 << 62,
                                               max_chars=1 << 62, max_int_bits=None)
    return test


if __name__ == "__main__":
    sys.exit(main())
