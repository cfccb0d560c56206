"""Runs inside the sandbox, in a child forked from the worker: loads one program, runs its tests.

It never sees expected values. For parent-judged tests it only evaluates expressions (the calls)
and reports their values in the closed type set; for child-judged tests it reports whether the
test code finished without an exception. Every test runs (no fail-fast), each preceded by a
"start" frame so the worker can enforce the per-test deadline; reports go over the dedicated,
authenticated result pipe.

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
# Without namespaces the child also may not start programs or open sockets.
_NO_NAMESPACE_EVENTS = frozenset({
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen", "socket.connect",
    "socket.bind", "socket.sendto", "socket.sendmsg", "pty.spawn",
})


# Rewriting a function's code or defaults would let a program reprogram the harness below.
_FROZEN_FUNC_ATTRS = frozenset({"__code__", "__defaults__", "__kwdefaults__"})


def install_audit_hook(strict):
    """Refuse the events above for everything that runs in this process from now on (an audit
    hook cannot be removed), and make the harness modules unreachable through sys.modules."""
    extra = _NO_NAMESPACE_EVENTS if strict else frozenset()

    def hook(event, args, _blocked=_BLOCKED_EVENTS, _extra=extra, _pre=_BLOCKED_PREFIXES,
             _imports=_BLOCKED_IMPORTS, _frozen=_FROZEN_FUNC_ATTRS, _str=str, _type=type,
             _len=len):
        if event in _blocked or event in _extra or event.startswith(_pre):
            raise RuntimeError(f"{event} is not allowed in the sandbox")
        if event == "import" and args and _type(args[0]) is _str and args[0].split(".")[0] in _imports:
            raise ImportError(f"module {args[0]} is not available in the sandbox")
        if event == "object.__setattr__" and _len(args) > 1 and args[1] in _frozen:
            raise RuntimeError(f"setting {args[1]} is not allowed in the sandbox")

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


def _eval_exprs(spec, ns, caps, _compile=compile, _eval=eval, _exec=exec, _guard=values.guard,
                _enc=_enc_value, _info=exception_info, _register=_register_source,
                _skip=_HARNESS_FILES | {TEST_FILE}):
    """Pre-statements, then each expression in order; stops at the first exception.

    Each expression is compiled as `lambda GUARD: (expr)`, so the guard inside it is a local
    the program cannot rebind.
    """
    if spec.get("pre"):
        _register(TEST_FILE, spec["pre"])
        _exec(_compile(spec["pre"], TEST_FILE, "exec"), ns)
    out = []
    for src in spec["exprs"]:
        wrapped = f"lambda {GUARD_NAME}: (\n{src}\n)"
        try:
            _register(TEST_FILE, wrapped)
            v = _eval(_compile(wrapped, TEST_FILE, "eval"), ns)(_guard)
        except BaseException as e:
            out.append({"e": _info(e, _skip)})
            break
        out.append(_enc(v, caps))
    return {"vals": out}


def _call(spec, ns, caps, _decode=values.decode, _enc=_enc_value):
    fn = ns.get(spec["fn"])
    if fn is None:
        raise NameError(f"name {spec['fn']!r} is not defined")
    return {"vals": [_enc(fn(*_decode(spec["args"])), caps)]}


def _run_test_code(spec, ns, _compile=compile, _exec=exec, _guard=values.guard,
                   _register=_register_source):
    """Run child-judged test code; returns what the wrapper returns (check, for check tests)."""
    _register(TEST_FILE, spec["src"])
    code = _compile(spec["src"], TEST_FILE, "exec")
    if not spec.get("wrapped"):
        ns[GUARD_NAME] = _guard
        _exec(code, ns)
        return ns.get("check")
    _exec(code, ns)
    return ns.pop(TEST_FUNC)(_guard)


def _exec_test(spec, ns, caps, _run=_run_test_code):
    _run(spec, ns)
    return {"ok": True}


def _check(spec, ns, caps, _run=_run_test_code):
    check = _run(spec, ns)
    fn = ns.get(spec["entry"])
    if fn is None:
        raise NameError(f"name {spec['entry']!r} is not defined")
    check(fn)
    return {"ok": True}


def _run_stdio(code, stdin_text, limits, result_fd):
    """Run the program as __main__ in a grandchild with the given stdin; return its output."""
    paths = {k: os.path.abspath(f".{k}") for k in ("stdin", "stdout", "stderr")}
    with open(paths["stdin"], "wb") as f:
        f.write(stdin_text.encode("utf-8", "surrogateescape"))
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(result_fd)
            for fd, (name, flags) in enumerate((("stdin", os.O_RDONLY),
                                                ("stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                                ("stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC))):
                opened = os.open(paths[name], flags, 0o600)
                os.dup2(opened, fd)
                os.close(opened)
            sys.stdin = io.TextIOWrapper(io.open(0, "rb", closefd=False), encoding="utf-8")
            sys.stdout = io.TextIOWrapper(io.open(1, "wb", closefd=False), encoding="utf-8")
            sys.stderr = io.TextIOWrapper(io.open(2, "wb", closefd=False), encoding="utf-8",
                                          errors="backslashreplace", line_buffering=True)
            ns = {"__name__": "__main__", "__builtins__": builtins}
            try:
                exec(code, ns)
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
    _, wstatus = os.waitpid(pid, 0)
    with open(paths["stdout"], "rb") as f:
        out = f.read(limits.max_output_bytes + 1)
    with open(paths["stderr"], "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - _MAX_MSG))
        err = f.read().decode("utf-8", "replace")
    truncated = len(out) > limits.max_output_bytes
    return {
        "out": out[:limits.max_output_bytes].decode("utf-8", "replace"),
        "trunc": truncated,
        "exit": os.waitstatus_to_exitcode(wstatus),
        "err": err,
    }


_RUNNERS = (("exprs", _eval_exprs), ("call", _call), ("exec", _exec_test), ("check", _check))


def run(job, start, send, result_fd, _runners=_RUNNERS, _info=exception_info, _clock=time.perf_counter,
        _compile=compile, _exec=exec):
    """Load the program and run tests[start:], reporting each through `send`."""
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
    for i in range(start, len(tests)):
        spec = tests[i]
        send({"t": "start", "i": i})
        t0 = _clock()
        try:
            kind = spec["kind"]
            if kind == "stdio":
                res = _run_stdio(code, spec["stdin"], limits, result_fd)
            else:
                runner = [fn for name, fn in _runners if name == kind]
                if not runner:
                    raise ValueError(f"unknown test kind {kind!r}")
                res = runner[0](spec, ns, caps)
        except BaseException as e:
            res = {"e": _info(e)}
        res.update(t="res", i=i, dt=_clock() - t0)
        send(res)
    send({"t": "done"})


def main(job, start, result_fd, key_fd, workdir, env, strict, drop_to):
    """Entry point in the freshly forked child. Never returns."""
    status = 0
    try:
        key = os.read(key_fd, 64)
        os.close(key_fd)
        send = make_sender(result_fd, protocol.make_signer(key))
        del key
        os.closerange(3, result_fd)
        os.closerange(result_fd + 1, 1 << 16)
        os.set_inheritable(result_fd, False)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        os.chdir(workdir)  # (no setsid here: it costs ~3 ms; the worker has its own session)
        if drop_to is not None:
            os.setgroups([])
            os.setresgid(drop_to, drop_to, drop_to)
            os.setresuid(drop_to, drop_to, drop_to)
        os.environ.clear()
        os.environ.update(env)
        os.environ["HOME"] = os.environ["TMPDIR"] = workdir
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
                    signal.SIGALRM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversized writes fail with EFBIG instead
        limits = limits_mod.Limits.from_dict(job["limits"])
        limits_mod.apply_rlimits(limits, job["cpu_seconds"])
        install_audit_hook(strict)
        run(job, start, send, result_fd)
    except BaseException:
        status = 70
    finally:
        os._exit(status)
