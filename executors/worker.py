"""The sandboxed worker: a slim process that forks one child per program and relays the judge's
requests to it, under deadlines.

Started by the judge process (`executors.judge`) as `python -m executors.worker`, inside
bubblewrap (as PID 1 of a fresh pid/net/mount/ipc/uts namespace, read-only root, private /tmp)
or, without namespaces, as a plain subprocess under an unprivileged uid. For each program the
judge sends "job" (the code, never the tests), then requests (call this, read that), then "end".
The worker forks a child that loads the program and answers them (`executors.child`). It owns
the deadlines: a request not answered in the time the judge gave it, or a child that dies or
corrupts its result channel, ends that child; the whole process tree is then killed and reaped,
the private tmp wiped, and the next request gets a fresh child, so one runaway test never hides
the verdicts of the others. A stdio program gets a fresh child per run; the worker itself
collects its output.

Every answer echoes the nonce of the request it answers: the child never sees nonces, so even a
program that got hold of this channel could not speak for a later request or program.
It talks to the judge over length-prefixed JSON frames on the pipes it was given as stdin/stdout.
Stdlib only (never JAX/numpy): the child it forks inherits its whole address space.
"""
import argparse
import gc
import os
import select
import shutil
import signal
import stat
import sys
import time

from executors import audit
from executors import child as child_mod
from executors import limits as limits_mod
from executors import protocol

NOBODY = 65534
SANDBOX_TMP = "/tmp"
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_KEEPCAPS = 8
_PR_SET_NO_NEW_PRIVS = 38
_CAP_VERSION_3 = 0x20080522
_CAP_DAC_READ_SEARCH = 2
_EXIT_GRACE = 0.2
_KILL_ROUNDS = 200
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


def drop_root(uid, keep_read_access):
    """Become `uid` for good (no supplementary groups, no way back, no setuid gains later).

    `keep_read_access` (no namespaces): keep CAP_DAC_READ_SEARCH and nothing else, so the
    interpreter and its libraries stay importable wherever root installed them (say under
    /root); files stay unwritable, and other users' processes (the pool's /proc/<pid>/mem and
    environ need ptrace rights) stay out of reach.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if keep_read_access:
        libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if keep_read_access:
        header = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
        keep = 1 << _CAP_DAC_READ_SEARCH
        data = (ctypes.c_uint32 * 6)(keep, keep, 0, 0, 0, 0)  # effective, permitted, inheritable
        if libc.capset(header, data) != 0:
            raise OSError(ctypes.get_errno(), "capset failed")
        libc.prctl(_PR_SET_KEEPCAPS, 0, 0, 0, 0)


def _reload_failure(loaded):
    """What a failed reload (after a restart) answers a request with: it ends the request."""
    if "timeout" in loaded or "crash" in loaded:
        return {k: loaded[k] for k in ("timeout", "crash") if k in loaded}
    info = loaded.get("e") if isinstance(loaded.get("e"), dict) else {}
    return {"crash": f"the program failed to load again: {info.get('type', 'error')}: "
                     f"{info.get('msg', '')}"}


def _write_within(fd, data, deadline):
    """Write all of `data` to the non-blocking `fd` by `deadline` (protocol.Timeout if not)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            if not select.select([], [fd], [], max(0.0, deadline - time.monotonic()))[1]:
                raise protocol.Timeout() from None


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
    """A forked child, its request pipe, its authenticated result channel, and its exit status."""

    def __init__(self, pid, reader, request_fd):
        self.pid = pid
        self.reader = reader
        self.request_fd = request_fd
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
        self.pid1 = os.getpid() == 1
        self.job = None        # the program being judged
        self.deadline = 0.0    # its wall-time deadline (time.monotonic)
        self.child = None      # the live child that loaded it, if any
        self.runs = 0          # children forked for it (a restart loads the program again)
        self.control = None    # the judge's channel (serve)
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
    def serve(self, reader, send):
        """Answer the judge until it closes the channel."""
        self.control = reader  # a message from the judge mid-relay: it abandoned the request
        while True:
            try:
                msg, body = protocol.split_relayed(reader.read(raw=True))
            except protocol.ChannelError:
                self.end_program()
                return
            op, nonce = msg.get("op"), msg.get("n")
            if op == "job":
                self.end_program()
                self.job, self.runs = msg, 0
                self.deadline = time.monotonic() + float(msg["timeout"])
                reply = {} if msg.get("stdio") else self.load()
            elif op == "end":
                reply = {"runs": self.runs}
                self.end_program()
            elif op == "stop":  # the judge abandoned a request (relay() has stopped its child)
                reply = {}
            elif self.job is None:
                reply = {"crash": "no program is loaded"}
            elif op == "stdio":
                reply = self.run_stdio(msg)
            elif body is None:
                reply = {"crash": "a request for the program must be a relayed frame"}
            else:
                for head, answer in self.relay(msg, body):
                    head["n"] = nonce
                    send(head if answer is None else protocol.relayed(head, answer))
                continue
            reply["n"] = nonce
            send(reply)

    def end_program(self):
        self.job = None
        self.stop_child()

    def stop_child(self):
        child, self.child = self.child, None
        if child is not None:
            os.close(child.reader.fd)
            os.close(child.request_fd)
            child.finish(0)
            self.kill_tree()
            self.wipe()

    def _lim(self):
        return limits_mod.Limits.from_dict(self.job["limits"])

    def load(self):
        """Fork a child that loads the program; its "load" report, with the child's generation
        (handles from an earlier child are void in a later one)."""
        lim = self._lim()
        child = self._fresh_child()
        if child is None:
            return {"timeout": "program"}
        t0 = time.monotonic()
        try:
            frame = child.reader.read(min(t0 + lim.load_timeout, self.deadline))
            if not isinstance(frame, dict) or frame.get("t") != "load":
                raise protocol.ChannelError("unexpected frame")
        except protocol.Timeout:
            frame = {"timeout": "load" if time.monotonic() < self.deadline else "program"}
        except protocol.ChannelError as e:
            frame = {"crash": self._crash_message(child, e, "while loading")}
        self.child = child
        if "names" not in frame:  # the load failed: nothing to keep alive
            self.stop_child()
        frame.update(t="load", g=self.runs, dt=time.monotonic() - t0)
        return frame

    def relay(self, msg, body):
        """Forward one request (`body`, as the judge encoded it) to the child and yield its
        answers as (head, body) (several for "calls": `msg["k"]` answers in all), each within
        the request's budget `b` seconds; (report, None) for what ends it here: a miss or a
        crash ends the child. The answers' bodies are passed on unread."""
        if self.child is None:  # restarted after a timeout or a crash: load it again
            loaded = self.load()
            if "names" not in loaded:
                yield _reload_failure(loaded), None
                return
        child, budget = self.child, float(msg.get("b") or self._lim().per_test_timeout)
        expect = msg.get("k", 1)
        expect = expect if type(expect) is int and expect > 0 else 1
        began = time.monotonic()
        try:  # (a child that stops reading must not hold us: the write has the budget too)
            _write_within(child.request_fd, protocol.encode_frame(body),
                          min(began + budget, self.deadline))
        except (OSError, protocol.Timeout) as e:
            self.stop_child()
            if isinstance(e, protocol.Timeout):
                yield {"timeout": "test" if time.monotonic() < self.deadline else "program",
                       "i": 0}, None
            else:
                yield {"crash": f"the program stopped reading requests ({e.strerror})", "i": 0}, None
            return
        i = 0
        while i < expect:  # every frame within the budget of the one before
            try:
                head, answer = protocol.split_relayed(
                    child.reader.read(min(began + budget, self.deadline), self.control, raw=True))
                count = head.get("k")
                if answer is None or type(count) is not int or not 0 < count <= expect - i or (
                        expect > 1 and head.get("i") != i):
                    raise protocol.ChannelError("out-of-order frame")
            except protocol.Interrupted:  # the judge needs no more answers (fail_fast)
                self.stop_child()
                return
            except protocol.Timeout:
                which = "test" if time.monotonic() < self.deadline else "program"
                self.stop_child()
                yield {"timeout": which, "i": i, "dt": time.monotonic() - began}, None
                return
            except protocol.ChannelError as e:
                message = self._crash_message(child, e, "during the test")
                self.stop_child()
                yield {"crash": message, "i": i, "dt": time.monotonic() - began}, None
                return
            now = time.monotonic()
            head.update(g=self.runs, dt=now - began)
            began = now
            i += count
            yield head, answer

    def _fresh_child(self, stdin=None):
        """A new child for the program in an emptied directory (None: its time is up)."""
        self.stop_child()
        if time.monotonic() >= self.deadline:
            return None
        self.runs += 1
        self.fresh_workdir()
        if stdin is not None:
            with open(os.path.join(self.workdir, child_mod.STDIN_FILE), "wb") as f:
                f.write(stdin.encode("utf-8", "surrogateescape"))
        return self.fork_child(self.job)

    def fork_child(self, job):
        isolated = self.mode == "bwrap"
        # what the child's audit hook needs, found here once rather than in every child
        audit.prepare_hook(None if isolated else self.workdir, home=self.workdir)
        r, w = os.pipe()
        qr, qw = os.pipe()
        kr, kw = os.pipe()
        job = dict(job, cpu_seconds=self.deadline - time.monotonic() + 1)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os.close(r)
            os.close(qw)
            os.close(kw)
            child_mod.main(job, w, qr, kr, self.workdir, isolated)
        os.close(w)
        os.close(qr)
        os.close(kr)
        os.set_blocking(qw, False)
        key = os.urandom(32)  # made after fork: the child learns it only through the pipe
        try:
            protocol.write_all(kw, key)
        except OSError:
            pass  # the child is already gone; the reader sees EOF
        os.close(kw)
        return _Child(pid, protocol.FrameReader(r, key=key), qw)

    def run_stdio(self, msg):
        """One stdio test: a fresh child runs the program as __main__ on `stdin`; we collect
        what it wrote."""
        lim = self._lim()
        self.child = child = self._fresh_child(stdin=str(msg.get("stdin", "")))
        if child is None:
            return {"timeout": "program"}
        try:
            return self._collect_stdio(child, lim, float(msg.get("b") or lim.per_test_timeout))
        finally:
            self.stop_child()

    def _collect_stdio(self, child, lim, budget):
        began = time.monotonic()
        try:
            frame = child.reader.read(min(began + lim.load_timeout, self.deadline))
            if not isinstance(frame, dict) or frame.get("t") != "load":
                raise protocol.ChannelError("unexpected frame")
        except protocol.Timeout:
            return {"timeout": "load" if time.monotonic() < self.deadline else "program"}
        except protocol.ChannelError as e:
            return {"crash": self._crash_message(child, e, "while loading")}
        if "e" in frame:
            return {"e": frame["e"], "load_error": True}
        if not child.wait(min(began + budget, self.deadline)):
            which = "test" if time.monotonic() < self.deadline else "program"
            return {"timeout": which, "dt": time.monotonic() - began}
        res = {"dt": time.monotonic() - began, "exit": child.status}
        try:
            with open(os.path.join(self.workdir, child_mod.STDOUT_FILE), "rb") as f:
                out = f.read(lim.max_output_bytes + 1)
            with open(os.path.join(self.workdir, child_mod.STDERR_FILE), "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 4000))
                err = f.read(4000)
        except OSError as e:  # the program removed or replaced its own output files
            return {"crash": f"the program's output could not be read ({e.strerror})"}
        res.update(out=out[:lim.max_output_bytes].decode("utf-8", "replace"),
                   trunc=len(out) > lim.max_output_bytes, err=err.decode("utf-8", "replace"))
        return res

    def _crash_message(self, child, err, when):
        status = child.finish(_EXIT_GRACE)
        if isinstance(err, protocol.FrameTooLarge):
            return f"the program's answer is too large to report ({err})"
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
                    help="unprivileged uid (and gid) to run as when started as root")
    args = ap.parse_args(argv)
    ctrl_in, ctrl_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)  # as PID 1, default disposition = immune from inside
    if os.getuid() == 0 and args.uid <= 0:
        raise SystemExit("--uid must be an unprivileged uid")
    if os.getuid() == 0 and args.mode == "bwrap" and os.getpid() == 1:
        # Root inside bubblewrap (which already set no_new_privs): the uid change alone makes
        # us non-dumpable (suid_dumpable), so no ctypes is ever loaded into this process, whose
        # memory every child inherits.
        os.setgroups([])
        os.setresgid(args.uid, args.uid, args.uid)
        os.setresuid(args.uid, args.uid, args.uid)
    else:
        if os.getuid() == 0:  # never run programs as root, with or without namespaces
            drop_root(args.uid, keep_read_access=args.mode == "none")
        # programs run as our uid: no ptrace or /proc/<pid>/mem on us (this loads ctypes, which
        # a program could then reach: see executors/README.md, "Without namespaces")
        calls = [(_PR_SET_DUMPABLE, 0)]
        if os.getpid() != 1:
            calls += [(_PR_SET_CHILD_SUBREAPER, 1), (_PR_SET_PDEATHSIG, signal.SIGKILL)]
        _prctl(*calls)
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    child_mod.snapshot_stdlib(PRELOAD)
    worker = Worker(args.mode)
    gc.collect()
    gc.freeze()  # children's collections then skip (and do not copy-on-write) our objects
    reader = protocol.FrameReader(ctrl_in)

    def send(obj):  # a message, or a relayed payload (bytes)
        protocol.write_all(ctrl_out, protocol.encode_frame(obj))

    send({"ready": True, "pid1": worker.pid1, "uid": os.getuid()})
    try:
        worker.serve(reader, send)
        return 0
    finally:
        if args.mode == "none":
            shutil.rmtree(worker.base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
