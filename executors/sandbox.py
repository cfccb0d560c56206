"""How a worker is launched: inside bubblewrap when namespaces are available, else plainly.

The worker is always a fresh `python -m executors.worker` (exec'd, never forked from the caller,
which may be a fat JAX process). Under bubblewrap it is PID 1 of new pid/net/mount/ipc/uts
namespaces whose filesystem holds only what Python needs, read-only, plus a private size-capped
/tmp; host temp dirs, home directories and the rest of the repository are simply absent.
"""
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings

import executors
from executors import protocol

log = logging.getLogger(__name__)

MODES = ("auto", "bwrap", "none")
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
_warned = set()
_probe_lock = threading.Lock()
_probe_cache = {}


class SandboxUnavailable(RuntimeError):
    """bubblewrap was asked for but cannot create the namespaces here."""


def package_root():
    """Directory that contains the `executors` package."""
    return os.path.dirname(os.path.dirname(os.path.abspath(executors.__file__)))


def _ancestors(path):
    out = []
    path = os.path.dirname(path)
    while path not in ("/", ""):
        out.append(path)
        path = os.path.dirname(path)
    return out[::-1]


def _python_binds(python):
    """(sandbox path, host path) pairs for the interpreter, its packages and this package."""
    wanted = [sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(python)),
              os.path.dirname(os.path.abspath(python)), os.path.join(package_root(), "executors")]
    out = []
    for path in sorted({os.path.abspath(p) for p in wanted} | {os.path.realpath(p) for p in wanted},
                       key=len):
        if not os.path.isdir(path) or path.startswith(tuple(d + "/" for d in _SYSTEM_DIRS)):
            continue
        if any(path == dst or path.startswith(dst + "/") for dst, _ in out):
            continue
        out.append((path, os.path.realpath(path)))
    return out


def worker_uid(index):
    """An unprivileged uid for worker slot `index` of this process (when we run as root).

    One uid per worker: RLIMIT_NPROC counts processes per uid, so a fork bomb in one sandbox
    cannot starve another (or anything else running as `nobody`).
    """
    return 0x40000000 + ((os.getpid() & 0xFFFF) << 8) + (index & 0xFF)


def bwrap_command(python, tmp_mb, uid=65534):
    """argv that starts the worker inside bubblewrap (`uid`: see worker_uid; used as root)."""
    bwrap = shutil.which("bwrap") or "/usr/bin/bwrap"
    argv = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--as-pid-1", "--new-session"]
    if os.getuid() != 0:
        # unprivileged: a user namespace maps us to nobody and forbids nesting another one
        argv += ["--unshare-user", "--uid", "65534", "--gid", "65534", "--disable-userns"]
    else:
        # as root the worker itself drops to `uid` (no user namespace needed); it needs no other
        # capability for that
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    argv += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", str(tmp_mb << 20), "--tmpfs", "/tmp"]
    made = set()
    for dst, src in _python_binds(python):
        for parent in _ancestors(dst):
            if parent not in made and parent != "/tmp":
                made.add(parent)  # bubblewrap would create these 0700: nobody could enter
                argv += ["--perms", "0755", "--dir", parent]
        argv += ["--ro-bind", src, dst]
    argv += ["--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
             "--setenv", "PYTHONPATH", package_root(), "--setenv", "PYTHONHASHSEED", "0",
             "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--setenv", "LANG", "C.UTF-8",
             "--chdir", "/tmp", "--", python, "-s", "-m", "executors.worker", "--mode", "bwrap",
             "--uid", str(uid)]
    return argv


def plain_command(python, uid=65534):
    """argv of a worker without namespaces (`uid`: what it drops to when started as root)."""
    return [python, "-s", "-m", "executors.worker", "--mode", "none", "--uid", str(uid)]


def judge_command(python):
    return [python, "-s", "-m", "executors.judge"]


def judge_env():
    """The judge's environment: none of the caller's (no secrets to leak), single-threaded
    numeric libraries (its address space is capped)."""
    return dict(plain_env(), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def plain_env():
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": package_root(),
           "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
    return env


def warn_once(key, message):
    if key not in _warned:
        _warned.add(key)
        log.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def probe_bwrap(python, tmp_mb=64, timeout=30.0):
    """Start one sandboxed worker and wait for its hello; (ok, reason). Cached per process."""
    key = (python, tmp_mb)
    with _probe_lock:
        if key in _probe_cache:
            return _probe_cache[key]
        if not (shutil.which("bwrap") or os.path.exists("/usr/bin/bwrap")):
            result = (False, "bubblewrap (bwrap) is not installed")
        else:
            try:
                proc = subprocess.Popen(bwrap_command(python, tmp_mb), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            except OSError as e:
                result = (False, f"cannot run bwrap: {e}")
            else:
                try:
                    hello = protocol.FrameReader(proc.stdout.fileno()).read(
                        time.monotonic() + timeout)
                    result = (bool(hello.get("ready")), "")
                except (protocol.ChannelError, protocol.Timeout):
                    proc.kill()
                    err = proc.stderr.read().decode("utf-8", "replace").strip()
                    result = (False, err.splitlines()[-1] if err else "worker did not start")
                finally:
                    proc.stdin.close()
                    proc.wait()
                    proc.stdout.close()
                    proc.stderr.close()
        _probe_cache[key] = result
        return result


_WITHOUT_NAMESPACES = ("programs run without namespaces, under an unprivileged uid when the pool "
                       "runs as root; rlimits, deadlines and an audit hook (no processes, signals, "
                       "sockets or writes outside a private dir) still apply, but host files are "
                       "readable and a determined program can get past an audit hook")
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `apt-get install -y bubblewrap`) and allow "
                "unprivileged user namespaces (`sysctl -w kernel.unprivileged_userns_clone=1`), "
                "or run as root")


_PR_GET_DUMPABLE, _PR_SET_DUMPABLE = 3, 4


def shield_caller():
    """Make this (the trainer's) process non-dumpable: without namespaces programs may run under
    its uid, and /proc/<pid>/mem, environ, fd/ of a non-dumpable process are root's alone. (Side
    effects: no core dumps; attaching a debugger needs root.) True if it took effect."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
        return libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def resolve(mode, python, tmp_mb=64, allow_unsandboxed=False):
    """'bwrap' or 'none' for a requested mode. Without namespaces (asked for, or "auto" where
    bubblewrap cannot run) it raises SandboxUnavailable unless `allow_unsandboxed`, and then
    warns loudly, once: scores and rewards from such runs are only as trustworthy as the
    programs."""
    if mode not in MODES:
        raise ValueError(f"sandbox must be one of {MODES}, got {mode!r}")
    if mode == "none":
        why = "sandbox='none' was asked for"
    else:
        ok, why = probe_bwrap(python, tmp_mb)
        if ok:
            return "bwrap"
        if mode == "bwrap":
            raise SandboxUnavailable(f"bubblewrap sandbox unavailable: {why}. To fix: "
                                     f"{INSTALL_HINT}.")
        why = f"namespaces unavailable ({why})"
    if not allow_unsandboxed:
        raise SandboxUnavailable(
            f"executors: refusing to run untrusted programs without a sandbox: {why}. Without "
            f"namespaces {_WITHOUT_NAMESPACES}, so a verdict (and a reward) could be forged. To "
            f"fix: {INSTALL_HINT}; or pass allow_unsandboxed=True to accept the risk.")
    warn_once(mode, f"executors: UNSANDBOXED ({why}, allow_unsandboxed=True): "
                    f"{_WITHOUT_NAMESPACES}. This process is made non-dumpable to keep its "
                    f"memory and environment from them. To isolate them: {INSTALL_HINT}.")
    shield_caller()
    return "none"
