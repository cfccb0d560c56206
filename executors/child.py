"""Runs inside the sandbox, in a child forked from the worker: loads one program, runs its tests.

It never sees expected values. For parent-judged tests it only evaluates expressions (the calls)
and reports their values in the closed type set; for child-judged tests it reports whether the
test code finished without an exception. Every test runs (no fail-fast); each report starts the
clock of the next test, so the worker can enforce per-test deadlines. Reports go over the
dedicated, authenticated result pipe.

Stdlib only: this module is imported inside the sandbox.
"""
import builtins
import io
import linecache
import os
import signal
import sys
import time
import traceback

from executors import limits as limits_mod
from executors import protocol, values

PROGRAM_FILE = "<solution>"
TEST_FILE = "<test>"
GUARD_NAME = "__sandbox_guard__"
TEST_FUNC = "__sandbox_test__"
STDIN_FILE, STDOUT_FILE, STDERR_FILE = ".stdin", ".stdout", ".stderr"  # stdio tests, in the cwd
_TB_LINES = 6
_MAX_MSG = 2000

# Audit events refused inside the child: tracing (a trace function can jump over a failing
# assert), raw memory (ctypes) and object-graph walks (gc). Legit solutions do not need them.
_BLOCKED_EVENTS = frozenset({
    "sys.settrace", "sys.setprofile", "sys._current_frames", "gc.get_objects", "gc.get_referrers",
    "gc.get_referents",
})
_BLOCKED_PREFIXES = ("ctypes.",)
_BLOCKED_IMPORTS = ("ctypes", "_ctypes")
# Without namespaces nothing else isolates the program, so the hook also refuses to start
# processes, send signals, open sockets, or change files outside the program's private directory.
_NO_NAMESPACE_EVENTS = frozenset({
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
    "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "socket.connect", "socket.bind",
    "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
})
_PATH_EVENTS = {  # event -> positions of path arguments that must stay inside the work dir
    "os.remove": (0,), "os.rmdir": (0,), "os.rename": (0, 1), "os.link": (0, 1),
    "os.symlink": (1,), "os.truncate": (0,), "os.chmod": (0,), "os.chown": (0,),
    "os.utime": (0,), "os.mkdir": (0,), "os.chflags": (0,), "os.lchflags": (0,),
    "os.setxattr": (0,), "os.removexattr": (0,), "shutil.rmtree": (0,),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
# Rewriting a function's code or defaults would let a program reprogram the harness below.
_FROZEN_FUNC_ATTRS = frozenset({"__code__", "__defaults__", "__kwdefaults__"})


def _inside(path, root, _fspath=os.fspath, _realpath=os.path.realpath, _type=type):
    if _type(path) is int:
        return True  # an already open descriptor
    try:
        path = _fspath(path)
        if _type(path) is bytes:
            path = path.decode("utf-8", "surrogateescape")
        if path in ("/dev/null", "/dev/stdout", "/dev/stderr"):
            return True
        real = _realpath(path)
    except Exception:
        return False
    return real == root or real.startswith(root + "/")


def install_audit_hook(workdir=None):
    """Refuse the events above for everything that runs in this process from now on (an audit
    hook cannot be removed), and make the harness modules unreachable through sys.modules.
    With `workdir` (no namespaces) also refuse processes, signals, sockets and writes outside it.
    """
    extra = _NO_NAMESPACE_EVENTS if workdir else frozenset()
    root = os.path.realpath(workdir) if workdir else None

    def hook(event, args, _blocked=_BLOCKED_EVENTS, _extra=extra, _pre=_BLOCKED_PREFIXES,
             _imports=_BLOCKED_IMPORTS, _frozen=_FROZEN_FUNC_ATTRS, _paths=_PATH_EVENTS,
             _inside=_inside, _root=root, _wflags=_WRITE_FLAGS, _str=str, _type=type, _len=len,
             _int=int):
        if event in _blocked or event in _extra or event.startswith(_pre):
            raise RuntimeError(f"{event} is not allowed in the sandbox")
        if event == "import" and args and _type(args[0]) is _str and args[0].split(".")[0] in _imports:
            raise ImportError(f"module {args[0]} is not available in the sandbox")
        if event == "object.__setattr__" and _len(args) > 1 and args[1] in _frozen:
            raise RuntimeError(f"setting {args[1]} is not allowed in the sandbox")
        if _root is None:
            return
        if event == "open" and _len(args) >= 3:
            mode, flags = args[1], args[2]
            writes = (_type(mode) is _str and any(c in mode for c in "wax+")) or (
                _type(flags) is _int and flags & _wflags)
            if writes and not _inside(args[0], _root):
                raise PermissionError(f"writing {args[0]!r} is not allowed in the sandbox")
        elif event in _paths:
            for k in _paths[event]:
                if k < _len(args) and not _inside(args[k], _root):
                    raise PermissionError(f"{event} on {args[k]!r} is not allowed in the sandbox")

    for name in [m for m in sys.modules if m.split(".")[0] in _BLOCKED_IMPORTS + ("executors",)]:
        del sys.modules[name]  # an `import executors.child` now loads a separate copy
    sys.addaudithook(hook)


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


def make_sender(fd, sign, _encode=protocol.encode_frame, _write=protocol.write_all):
    """A function that signs and writes one frame to the result pipe."""
    seq = [0]

    def send(obj):
        frame = _encode(obj, sign, seq[0])
        seq[0] += 1
        _write(fd, frame)

    return send


def _register_source(filename, source, _cache=linecache.cache):
    lines = source.splitlines(True)
    _cache[filename] = (len(source), None, lines, filename)


# The runners below take what they call as default arguments, bound at import: a program that
# rebinds builtins or this module's globals does not change how its tests are run or reported.

def _enc_value(v, caps, _encode=values.encode, _unsupported=values.UnsupportedValue):
    try:
        return {"v": _encode(v, **caps)}
    except _unsupported as e:
        return {"u": str(e)}
    except RecursionError:
        return {"u": "value nested too deeply"}


def compile_spec(spec, _compile=compile):
    """Code objects for one test spec. Test code is trusted and repeats across programs, so the
    worker compiles it (and caches it) before forking; the child only runs it.

    The expressions of an `exprs` test become one `lambda GUARD: (thunk, ...)`: the guard is a
    parameter, a local the program cannot rebind, and each thunk runs one expression.
    """
    kind = spec["kind"]
    if kind == "exprs":
        thunks = "".join(f"(lambda: (\n{src}\n)),\n" for src in spec["exprs"])
        params = ", ".join([GUARD_NAME] + spec.get("bind", [])[:1])
        exprs = _compile(f"lambda {params}: (\n{thunks})", TEST_FILE, "eval")
        pre = _compile(spec["pre"], TEST_FILE, "exec") if spec.get("pre") else None
        return (pre, exprs)
    if kind in ("exec", "check"):
        return (_compile(spec["src"], TEST_FILE, "exec"),)
    return ()


def _missing(spec, code, ns, caps):
    raise RuntimeError("the test code did not compile")


def _eval_exprs(spec, code, ns, caps, _eval=eval, _exec=exec, _guard=values.guard,
                _enc=_enc_value, _info=exception_info, _skip=_HARNESS_FILES | {TEST_FILE}):
    """Pre-statements, then each expression in order; stops at the first exception."""
    pre, exprs = code
    if pre is not None:
        _exec(pre, ns)
    bound = []
    if spec.get("bind"):  # check(candidate): the holes call `candidate`, i.e. the entry point
        fn = ns.get(spec["bind"][1])
        if fn is None:
            raise NameError(f"name {spec['bind'][1]!r} is not defined")
        bound.append(fn)
    out = []
    for thunk in _eval(exprs, ns)(_guard, *bound):
        try:
            v = thunk()
        except BaseException as e:
            out.append({"e": _info(e, _skip)})
            break
        out.append(_enc(v, caps))
    return {"vals": out}


def _call(spec, code, ns, caps, _decode=values.decode, _enc=_enc_value):
    fn = ns.get(spec["fn"])
    if fn is None:
        raise NameError(f"name {spec['fn']!r} is not defined")
    return {"vals": [_enc(fn(*_decode(spec["args"])), caps)]}


def _run_test_code(spec, code, ns, _exec=exec, _guard=values.guard, _register=_register_source):
    """Run child-judged test code; returns what the wrapper returns (check, for check tests)."""
    _register(TEST_FILE, spec["src"])
    if not spec.get("wrapped"):
        ns[GUARD_NAME] = _guard
        _exec(code[0], ns)
        return ns.get("check")
    _exec(code[0], ns)
    return ns.pop(TEST_FUNC)(_guard)


def _exec_test(spec, code, ns, caps, _run=_run_test_code):
    _run(spec, code, ns)
    return {"ok": True}


def _check(spec, code, ns, caps, _run=_run_test_code):
    check = _run(spec, code, ns)
    fn = ns.get(spec["entry"])
    if fn is None:
        raise NameError(f"name {spec['entry']!r} is not defined")
    check(fn)
    return {"ok": True}


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


_RUNNERS = (("exprs", _eval_exprs), ("call", _call), ("exec", _exec_test), ("check", _check))


def run(job, compiled, start, send, result_fd, _runners=_RUNNERS, _info=exception_info,
        _clock=time.perf_counter, _compile=compile, _exec=exec):
    """Load the program and run tests[start:], reporting each through `send`.

    Frames: "load" (its arrival starts the first test's clock), then one "res" per test (each
    starts the next test's clock). A stdio program runs once, as __main__, right after "load".
    """
    limits = limits_mod.Limits.from_dict(job["limits"])
    caps = {"max_chars": limits.max_value_chars}
    tests = job["tests"]
    is_stdio = any(t["kind"] == "stdio" for t in tests)
    ns = {"__name__": "solution", "__builtins__": builtins}
    _register_source(PROGRAM_FILE, job["code"])
    t0 = _clock()
    try:
        code = _compile(job["code"], PROGRAM_FILE, "exec")
        if not is_stdio:
            _exec(code, ns)
            if job.get("setup"):  # MBPP order: test_setup_code may use the program's classes
                _exec(_compile(job["setup"], "<setup>", "exec"), ns)
    except BaseException as e:
        send({"t": "load", "e": _info(e), "dt": _clock() - t0})
        return
    send({"t": "load", "dt": _clock() - t0})
    if is_stdio:  # one whole run of the program per child
        _run_as_main(code, result_fd)
    for i in range(start, len(tests)):
        spec = tests[i]
        t0 = _clock()
        try:
            kind = spec["kind"]
            runner = [fn for name, fn in _runners if name == kind]
            if not runner:
                raise ValueError(f"unknown test kind {kind!r}")
            res = (runner[0] if compiled[i] is not None else _missing)(spec, compiled[i], ns, caps)
        except BaseException as e:
            res = {"e": _info(e)}
        res.update(t="res", i=i, dt=_clock() - t0)
        send(res)


def _close_other_fds(keep):
    """Close every inherited descriptor above stderr except `keep` (the worker's pipes)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: the slow way
        os.closerange(3, keep)
        os.closerange(keep + 1, 1 << 16)
        return
    for fd in fds:
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the descriptor listdir itself used


def main(job, compiled, start, result_fd, key_fd, workdir, isolated):
    """Entry point in the freshly forked child. Never returns."""
    status = 0
    try:
        key = os.read(key_fd, 64)
        os.close(key_fd)
        send = make_sender(result_fd, protocol.make_signer(key))
        del key
        _close_other_fds(result_fd)
        os.set_inheritable(result_fd, False)
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
        install_audit_hook(None if isolated else workdir)
        run(job, compiled, start, send, result_fd)
    except BaseException:
        status = 70
    finally:
        os._exit(status)
