"""The pre-forked worker: a slim process that forks one child per program and supervises it.

Started as `python -m executors.worker` by the pool, inside bubblewrap (as PID 1 of a fresh
pid/net/mount/ipc/uts namespace, read-only root, private /tmp) or, without namespaces, as a
plain subprocess. It owns the deadlines: a test that has not reported by its deadline, or a
child that dies or corrupts its result channel, ends that child; the whole process tree is then
killed and reaped, the private tmp wiped, and a new child resumes at the next test, so one
runaway test never hides the verdicts of the others.

It talks to the pool over length-prefixed JSON frames on the pipes it was given as stdin/stdout.
Stdlib only (never JAX/numpy): the child it forks inherits its whole address space.
"""
import argparse
import errno
import os
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


class Worker:
    def __init__(self, mode):
        self.mode = mode
        self.pid1 = os.getpid() == 1
        self.drop_to = None
        if mode == "bwrap":
            self.base = SANDBOX_TMP
            self.protected = set(os.listdir(self.base))  # mount points bubblewrap created
        else:
            import tempfile

            self.base = tempfile.mkdtemp(prefix="ledex-exec-")
            self.protected = set()
            if os.getuid() == 0:
                self.drop_to = NOBODY  # rlimits (processes) do not bind root
                os.chmod(self.base, 0o711)
        self.workdir = os.path.join(self.base, "run")

    # -- process tree -------------------------------------------------------------------------
    def kill_tree(self):
        """SIGKILL every process the programs started and reap them all."""
        for _ in range(10000):
            if self.pid1:
                try:
                    os.kill(-1, signal.SIGKILL)  # PID 1 of the namespace: everyone but us
                    alive = True
                except ProcessLookupError:
                    alive = False
            else:
                pids = _descendants(os.getpid()) if _has_children() else []
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                alive = bool(pids)
            _reap(block=alive)
            if not alive:
                return
        raise RuntimeError("could not kill the program's processes")

    def finish_child(self, pid, grace):
        """Exit status of the direct child (negative: signal), killing it after `grace` s."""
        end = time.monotonic() + grace
        while True:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if done:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() >= end:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None
            time.sleep(0.002)

    # -- private tmp --------------------------------------------------------------------------
    def fresh_workdir(self):
        self.wipe()
        os.mkdir(self.workdir, 0o700)
        if self.drop_to is not None:
            os.chown(self.workdir, self.drop_to, self.drop_to)

    def wipe(self):
        for name in os.listdir(self.base):
            if name not in self.protected:
                _rmtree(os.path.join(self.base, name))

    # -- one program --------------------------------------------------------------------------
    def run_job(self, job):
        t0 = time.monotonic()
        lim = limits_mod.Limits.from_dict(job["limits"])
        deadline = t0 + float(job.get("timeout") or lim.program_timeout)
        n = len(job["tests"])
        results = [None] * n
        load = None
        start = 0
        runs = 0
        while start < n and time.monotonic() < deadline:
            runs += 1
            start, load_info = self.run_child(job, start, results, lim, deadline)
            load = load if load is not None else load_info
            self.kill_tree()
        for i in range(n):
            if results[i] is None:
                results[i] = {"timeout": "program", "dt": 0.0}
        self.wipe()
        return {"id": job["id"], "tests": results, "load": load, "runs": runs,
                "wall": time.monotonic() - t0}

    def run_child(self, job, start, results, lim, deadline):
        """Fork a child for tests[start:]; fill `results`; return (next test to run, load info)."""
        self.fresh_workdir()
        r, w = os.pipe()
        kr, kw = os.pipe()
        job = dict(job, cpu_seconds=deadline - time.monotonic() + 1)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            child_mod.main(job, start, w, kr, self.workdir, CHILD_ENV, self.mode == "none",
                           self.drop_to)
        os.close(w)
        os.close(kr)
        key = os.urandom(32)  # made after fork: the child learns it only through the pipe
        try:
            protocol.write_all(kw, key)
        except OSError:
            pass  # the child is already gone; the reader sees EOF
        os.close(kw)
        reader = protocol.FrameReader(r, key=key)
        del key
        try:
            return self._supervise(reader, pid, start, results, lim, deadline)
        finally:
            os.close(r)

    def _supervise(self, reader, pid, start, results, lim, deadline):
        n = len(results)
        per_test = lim.per_test_timeout
        t_load = time.monotonic()
        try:
            frame = reader.read(min(t_load + per_test, deadline))
            if frame.get("t") != "load":
                raise protocol.ChannelError("unexpected frame")
        except protocol.Timeout:
            for i in range(start, n):
                results[i] = {"timeout": "load", "dt": time.monotonic() - t_load}
            return n, {"timeout": True}
        except protocol.ChannelError as e:
            msg = self._crash_message(pid, e, "while loading")
            for i in range(start, n):
                results[i] = {"crash": msg, "dt": 0.0}
            return n, {"crash": msg}
        if "e" in frame:
            for i in range(start, n):
                results[i] = {"e": frame["e"], "load_error": True, "dt": 0.0}
            return n, {"e": frame["e"]}
        load = {"dt": frame.get("dt")}
        expect = start  # index of the next test to start
        running = None  # (index, monotonic start)
        while True:
            now = time.monotonic()
            if running is None:
                limit = min(now + per_test, deadline)
            else:
                limit = min(running[1] + per_test, deadline)
            try:
                frame = reader.read(limit)
                kind = frame.get("t")
                if kind == "start" and running is None and frame.get("i") == expect:
                    running = (expect, time.monotonic())
                elif kind == "res" and running is not None and frame.get("i") == running[0]:
                    frame["dt"] = time.monotonic() - running[1]
                    results[running[0]] = frame
                    expect = running[0] + 1
                    running = None
                elif kind == "done" and running is None and expect == n:
                    self.finish_child(pid, _EXIT_GRACE)
                    return n, load
                else:
                    raise protocol.ChannelError("out-of-order frame")
            except protocol.Timeout:
                i = running[0] if running is not None else expect
                t_start = running[1] if running is not None else now
                if i >= n:
                    return n, load
                which = "test" if time.monotonic() < deadline else "program"
                results[i] = {"timeout": which, "dt": time.monotonic() - t_start}
                return i + 1, load
            except protocol.ChannelError as e:
                i = running[0] if running is not None else expect
                if i >= n:
                    return n, load
                t_start = running[1] if running is not None else now
                results[i] = {"crash": self._crash_message(pid, e, "during the test"),
                              "dt": time.monotonic() - t_start}
                return i + 1, load

    def _crash_message(self, pid, err, when):
        status = self.finish_child(pid, _EXIT_GRACE)
        if str(err) == "closed":
            return f"the program {describe_status(status)} {when}"
        return f"the result channel was corrupted {when} ({err})"


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
    def fix(func, p, exc_info):
        # the program may have removed our permissions on its own directories
        try:
            os.chmod(os.path.dirname(p), stat.S_IRWXU)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, stat.S_IRWXU)
                shutil.rmtree(p, onerror=lambda *a: None)
            else:
                os.unlink(p)
        except OSError:
            pass

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, onerror=fix)
    else:
        try:
            os.unlink(path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("bwrap", "none"), required=True)
    args = ap.parse_args(argv)
    ctrl_in, ctrl_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)  # as PID 1, default disposition = immune from inside
    if args.mode == "bwrap" and os.getuid() == 0:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
    calls = [(_PR_SET_DUMPABLE, 0)]  # programs run as our uid: no ptrace or /proc/1/mem on us
    if os.getpid() != 1:
        calls += [(_PR_SET_CHILD_SUBREAPER, 1), (_PR_SET_PDEATHSIG, signal.SIGKILL)]
    _prctl(*calls)
    worker = Worker(args.mode)
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
