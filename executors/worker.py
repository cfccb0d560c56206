"""The pre-forked worker: a slim process that forks one child per program and supervises it.

Started as `python -m executors.worker` by the pool, inside bubblewrap (as PID 1 of a fresh
pid/net/mount/ipc/uts namespace, read-only root, private /tmp) or, without namespaces, as a
plain subprocess. It owns the deadlines: a test that has not reported by its deadline, or a
child that dies or corrupts its result channel, ends that child; the whole process tree is then
killed and reaped, the private tmp wiped, and a new child resumes at the next test, so one
runaway test never hides the verdicts of the others. A stdio program gets a fresh child per
test (each run is a whole program execution); the worker itself collects its output.

It talks to the pool over length-prefixed JSON frames on the pipes it was given as stdin/stdout.
Stdlib only (never JAX/numpy): the child it forks inherits its whole address space.
"""
import argparse
import collections
import gc
import os
import select
import shutil
import signal
import stat
import sys
import time

from executors import child as child_mod
from executors import limits as limits_mod
from executors import protocol

NOBODY = 65534
SANDBOX_TMP = "/tmp"
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_EXIT_GRACE = 0.2
_KILL_ROUNDS = 200
_CODE_CACHE = 4096
# Imported once here so that every forked child has them for free (HumanEval prompts start with
# `from typing import List`; MBPP solutions lean on re, math, collections, heapq, itertools).
PRELOAD = ("typing", "math", "cmath", "re", "collections", "itertools", "functools", "heapq",
           "bisect", "string", "random", "operator", "copy", "datetime", "fractions", "decimal",
           "statistics", "array", "hashlib")
CHILD_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def _prctl(*calls):
    """A few prctl calls through ctypes, then ctypes is dropped so children cannot reach it."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for option, arg in calls:
        libc.prctl(option, arg, 0, 0, 0)
    del libc
    for name in [m for m in sys.modules if m.split(".")[0] in ("ctypes", "_ctypes")]:
        del sys.modules[name]


def describe_status(status):
    if status is None:
        return "was killed"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name}"
    return f"exited with code {status}"


class _Child:
    """A forked child, its authenticated result channel, and its exit status once known."""

    def __init__(self, pid, reader):
        self.pid = pid
        self.reader = reader
        self.status = None
        self.exited = False

    def wait(self, deadline):
        """Wait for the child to exit until `deadline`; True if it did."""
        fd = None
        try:
            fd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            pass
        try:
            while True:
                try:
                    done, status = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:
                    self.exited = True
                    return True
                if done:
                    self.status, self.exited = os.waitstatus_to_exitcode(status), True
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if fd is not None:
                    select.select([fd], [], [], left)
                else:
                    time.sleep(min(left, 0.002))
        finally:
            if fd is not None:
                os.close(fd)

    def finish(self, grace):
        """Exit status (negative: signal; None: we killed it), killing it after `grace` s."""
        if not self.exited and not self.wait(time.monotonic() + grace):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait(time.monotonic() + 5)
            self.status = None
        return self.status


class Worker:
    def __init__(self, mode):
        self.mode = mode
        self.code_cache = collections.OrderedDict()
        self.pid1 = os.getpid() == 1
        if mode == "bwrap":
            self.base = SANDBOX_TMP
            self.protected = set(os.listdir(self.base))  # mount points bubblewrap created
        else:
            import tempfile

            self.base = tempfile.mkdtemp(prefix="ledex-exec-")
            self.protected = set()
        self.workdir = os.path.join(self.base, "run")
        # what every child needs, set once here rather than after each fork
        os.environ.clear()
        os.environ.update(CHILD_ENV, HOME=self.workdir, TMPDIR=self.workdir)
        for sig in (signal.SIGALRM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversized writes fail with EFBIG instead

    # -- process tree -------------------------------------------------------------------------
    def kill_tree(self):
        """SIGKILL every process the programs started and reap them all."""
        if self.pid1:
            # PID 1 of the namespace: kill(-1) reaches everyone but us, atomically
            for _ in range(_KILL_ROUNDS):
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    _reap(block=False)
                    return
                _reap(block=True)
            raise RuntimeError("could not kill the program's processes")
        # a subreaper: every orphan stays below us; freeze the tree first so it cannot grow
        for _ in range(_KILL_ROUNDS):
            if not _has_children():
                return
            frozen = set()
            for _ in range(_KILL_ROUNDS):
                pids = set(_descendants(os.getpid())) - frozen
                if not pids:
                    break
                _signal_all(pids, signal.SIGSTOP)
                frozen |= pids
            _signal_all(frozen, signal.SIGKILL)
            _reap(block=True)
        raise RuntimeError("could not kill the program's processes")

    # -- test code ----------------------------------------------------------------------------
    def compiled(self, specs):
        """Compiled test code per spec, cached across programs (None: it did not compile)."""
        out = []
        for spec in specs:
            key = repr((spec["kind"], spec.get("pre"), spec.get("exprs"), spec.get("src")))
            code = self.code_cache.get(key)
            if code is None:
                try:
                    code = child_mod.compile_spec(spec)
                except (SyntaxError, ValueError, RecursionError, MemoryError):
                    out.append(None)
                    continue
                self.code_cache[key] = code
                if len(self.code_cache) > _CODE_CACHE:
                    self.code_cache.popitem(last=False)
            else:
                self.code_cache.move_to_end(key)
            out.append(code)
        return out

    # -- private tmp --------------------------------------------------------------------------
    def fresh_workdir(self):
        """An empty private directory for the next child (kept between programs, emptied:
        creating and removing directories is slow on some host filesystems)."""
        self.wipe()
        try:
            os.mkdir(self.workdir, 0o700)
        except FileExistsError:
            pass

    def wipe(self):
        """Remove whatever programs left in the private tmp (and elsewhere in /tmp)."""
        wd = self.workdir
        if os.path.islink(wd) or (os.path.lexists(wd) and not os.path.isdir(wd)):
            os.unlink(wd)  # the program replaced its directory
        elif os.path.isdir(wd):
            os.chmod(wd, 0o700)
            for name in os.listdir(wd):
                _rmtree(os.path.join(wd, name))
        for name in os.listdir(self.base):
            if name not in self.protected and name != "run":
                _rmtree(os.path.join(self.base, name))

    # -- one program --------------------------------------------------------------------------
    def run_job(self, job):
        t0 = time.monotonic()
        lim = limits_mod.Limits.from_dict(job["limits"])
        deadline = t0 + float(job.get("timeout") or lim.program_timeout)
        n = len(job["tests"])
        stdio = any(t["kind"] == "stdio" for t in job["tests"])
        compiled = self.compiled(job["tests"])
        results = [None] * n
        start = runs = 0
        while start < n and time.monotonic() < deadline:
            runs += 1
            self.fresh_workdir()
            if stdio:
                with open(os.path.join(self.workdir, child_mod.STDIN_FILE), "wb") as f:
                    f.write(job["tests"][start]["stdin"].encode("utf-8", "surrogateescape"))
            child = self.fork_child(job, compiled, start, deadline)
            try:
                if stdio:
                    start = self.supervise_stdio(child, start, results, lim, deadline)
                else:
                    start = self.supervise(child, start, results, lim, deadline)
            finally:
                os.close(child.reader.fd)
                child.finish(0)
                self.kill_tree()
                self.wipe()
        for i in range(n):
            if results[i] is None:
                results[i] = {"timeout": "program", "dt": 0.0}
        return {"id": job["id"], "tests": results, "runs": runs, "wall": time.monotonic() - t0}

    def fork_child(self, job, compiled, start, deadline):
        r, w = os.pipe()
        kr, kw = os.pipe()
        job = dict(job, cpu_seconds=deadline - time.monotonic() + 1)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os.close(r)
            os.close(kw)
            child_mod.main(job, compiled, start, w, kr, self.workdir, self.mode == "bwrap")
        os.close(w)
        os.close(kr)
        key = os.urandom(32)  # made after fork: the child learns it only through the pipe
        try:
            protocol.write_all(kw, key)
        except OSError:
            pass  # the child is already gone; the reader sees EOF
        os.close(kw)
        return _Child(pid, protocol.FrameReader(r, key=key))

    def _load(self, child, start, results, lim, deadline):
        """Wait for the child's load report; on failure fill all remaining results."""
        n = len(results)
        t_load = time.monotonic()
        try:
            frame = child.reader.read(min(t_load + lim.load_timeout, deadline))
            if frame.get("t") != "load":
                raise protocol.ChannelError("unexpected frame")
        except protocol.Timeout:
            fill = {"timeout": "load", "dt": time.monotonic() - t_load}
        except protocol.ChannelError as e:
            fill = {"crash": self._crash_message(child, e, "while loading"), "dt": 0.0}
        else:
            if "e" not in frame:
                return True
            fill = {"e": frame["e"], "load_error": True, "dt": 0.0}
        for i in range(start, n):
            results[i] = dict(fill)
        return False

    def supervise(self, child, start, results, lim, deadline):
        """Collect tests[start:] from a function-test child; return the next test to run.

        Each report starts the clock of the next test (the first starts at the load report).
        """
        n = len(results)
        if not self._load(child, start, results, lim, deadline):
            return n
        expect = start
        began = time.monotonic()
        while True:
            try:
                frame = child.reader.read(min(began + lim.per_test_timeout, deadline))
                if frame.get("t") != "res" or frame.get("i") != expect:
                    raise protocol.ChannelError("out-of-order frame")
                now = time.monotonic()
                frame["dt"] = now - began
                results[expect] = frame
                expect, began = expect + 1, now
                if expect == n:
                    return n
            except protocol.Timeout:
                which = "test" if time.monotonic() < deadline else "program"
                results[expect] = {"timeout": which, "dt": time.monotonic() - began}
                return expect + 1
            except protocol.ChannelError as e:
                results[expect] = {"crash": self._crash_message(child, e, "during the test"),
                                   "dt": time.monotonic() - began}
                return expect + 1

    def supervise_stdio(self, child, i, results, lim, deadline):
        """One stdio test: the child runs the program as __main__; we collect what it wrote."""
        began = time.monotonic()
        if not self._load(child, i, results, lim, deadline):
            return len(results)
        if not child.wait(min(began + lim.per_test_timeout, deadline)):
            which = "test" if time.monotonic() < deadline else "program"
            results[i] = {"timeout": which, "dt": time.monotonic() - began}
            return i + 1
        res = {"dt": time.monotonic() - began, "exit": child.status}
        try:
            with open(os.path.join(self.workdir, child_mod.STDOUT_FILE), "rb") as f:
                out = f.read(lim.max_output_bytes + 1)
            with open(os.path.join(self.workdir, child_mod.STDERR_FILE), "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 4000))
                err = f.read(4000)
        except OSError as e:  # the program removed or replaced its own output files
            results[i] = {"crash": f"the program's output could not be read ({e.strerror})",
                          "dt": res["dt"]}
            return i + 1
        res.update(out=out[:lim.max_output_bytes].decode("utf-8", "replace"),
                   trunc=len(out) > lim.max_output_bytes, err=err.decode("utf-8", "replace"))
        results[i] = res
        return i + 1

    def _crash_message(self, child, err, when):
        status = child.finish(_EXIT_GRACE)
        if str(err) == "closed":
            return f"the program {describe_status(status)} {when}"
        return f"the result channel was corrupted {when} ({err})"


def _signal_all(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _descendants(root):
    """PIDs below `root` (this worker is a subreaper, so orphans stay below it)."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        ppid = int(data[data.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out, stack = [], [root]
    while stack:
        for pid in children.get(stack.pop(), ()):
            out.append(pid)
            stack.append(pid)
    return out


def _has_children():
    """Whether any descendant is left; as a subreaper every orphan becomes our child."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def _reap(block):
    """Collect exited children; with `block`, wait until none is left (all were SIGKILLed)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _rmtree(path):
    """Remove `path` and everything below it, without recursion: a program may leave a tree
    thousands of levels deep, with whatever permissions it likes on its directories.

    An explicit stack and the working directory do the walk (as fts does): each directory is
    entered by name from its parent and left by "..", so no path grows with the depth (no
    ENAMETOOLONG) and no file descriptor is held per level. Each directory is listed once; a
    directory the program made unreadable is ours and gets its permissions back. Runs only after
    the program's processes are gone, so nothing moves the tree underneath.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        _unlink(path)
        return
    path = os.path.abspath(path)
    parent, name = os.path.dirname(path), os.path.basename(path)
    home = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.chdir(parent)
        stack = [[name, None]]  # [name in the current directory's parent, subdirs left to do]
        while stack:
            top = stack[-1]
            if top[1] is None:
                if not _enter(top[0]):
                    stack.pop()  # cannot be entered (nor then removed): left in place
                    continue
                subdirs = []
                for entry in _scan("."):
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False
                    if is_dir:
                        subdirs.append(entry.name)
                    else:
                        _unlink(entry.name)
                top[1] = subdirs
            if top[1]:
                stack.append([top[1].pop(), None])
                continue
            os.chdir("..")
            stack.pop()
            try:
                os.rmdir(top[0])
            except OSError:
                pass
    finally:
        os.fchdir(home)
        os.close(home)


def _enter(name):
    """chdir into the directory `name` of the current one, restoring our permissions on it."""
    for attempt in range(2):
        try:
            os.chdir(name)
        except PermissionError:
            if attempt:
                return False
            try:
                os.chmod(name, stat.S_IRWXU)
            except OSError:
                return False
            continue
        except OSError:
            return False
        try:
            os.chmod(".", stat.S_IRWXU)  # listing and unlinking need read, write and search
        except OSError:
            pass
        return True
    return False


def _scan(where):
    try:
        with os.scandir(where) as it:
            return list(it)
    except OSError:
        return []


def _unlink(name):
    try:
        os.unlink(name)
    except OSError:
        pass  # already gone, or not ours to remove: the directory then stays


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("bwrap", "none"), required=True)
    ap.add_argument("--uid", type=int, default=NOBODY,
                    help="unprivileged uid (and gid) to run as when started as root in bwrap")
    args = ap.parse_args(argv)
    ctrl_in, ctrl_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)  # as PID 1, default disposition = immune from inside
    if args.mode == "bwrap" and os.getuid() == 0:
        if args.uid <= 0:
            raise SystemExit("--uid must be an unprivileged uid")
        os.setgroups([])
        os.setresgid(args.uid, args.uid, args.uid)
        os.setresuid(args.uid, args.uid, args.uid)
    calls = [(_PR_SET_DUMPABLE, 0)]  # programs run as our uid: no ptrace or /proc/1/mem on us
    if os.getpid() != 1:
        calls += [(_PR_SET_CHILD_SUBREAPER, 1), (_PR_SET_PDEATHSIG, signal.SIGKILL)]
    _prctl(*calls)
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    worker = Worker(args.mode)
    gc.collect()
    gc.freeze()  # children's collections then skip (and do not copy-on-write) our objects
    reader = protocol.FrameReader(ctrl_in)
    protocol.write_all(ctrl_out, protocol.encode_frame(
        {"ready": True, "pid1": worker.pid1, "uid": os.getuid()}))
    try:
        while True:
            try:
                job = reader.read()
            except protocol.ChannelError:
                return 0
            reply = worker.run_job(job)
            protocol.write_all(ctrl_out, protocol.encode_frame(reply))
    finally:
        if args.mode == "none":
            shutil.rmtree(worker.base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
