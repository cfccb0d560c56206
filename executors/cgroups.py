"""Per-sandbox cgroups: the memory and process limits bind a sandbox's whole process tree.

rlimits (`executors.limits`) hold per process: eight forks of a program under memory_mb=512 can
each take 400 MB. So every worker the pool starts gets a cgroup of its own whose memory limit
and pids limit cover the worker, bubblewrap's monitor and every process a program starts. The
worker joins it before it can fork anything: it is started through a tiny shell that writes its
own pid to cgroup.procs and then execs the real command (same pid; fork inherits membership),
so no thread of the (multi-threaded) pool runs code between fork and exec.

Limits, per sandbox:
  memory: memory_mb + WORKER_MB (the worker interpreter, bubblewrap) + the private /tmp's size
    under bubblewrap (tmpfs pages are charged to the cgroup); swap is not a way around it
    (v2 memory.swap.max = 0, v1 memory.memsw.limit_in_bytes = the same limit, or swappiness 0
    where swap is not accounted). Each process keeps its RLIMIT_AS of memory_mb too.
  pids: max_processes processes and threads in the whole sandbox, worker included.

cgroup v2 (memory.max, memory.swap.max, pids.max) and the v1 layout (memory.limit_in_bytes,
memory.memsw.limit_in_bytes, pids.max) are both used under this process's own cgroup (from
/proc/self/cgroup): ROOT/<own>/ledex-exec-<pid>-<tag>/w<worker>-<n>. v2 allows no processes in a
cgroup whose children use controllers (except the root), so there the pool process first moves
into a leaf of its own, ledex-pool-<pid>, when it is alone in its cgroup.

Stdlib only; used by the pool process, never inside the sandbox.
"""
import atexit
import errno
import itertools
import logging
import os
import re
import secrets
import signal
import threading
import time

log = logging.getLogger(__name__)

ROOT = "/sys/fs/cgroup"
PROC_SELF_CGROUP = "/proc/self/cgroup"
MODES = ("auto", "required", "none")
CONTROLLERS = ("memory", "pids")
WORKER_MB = 64  # the worker's own share: interpreter + preloaded modules (~20 MB), bubblewrap
_BASE_PREFIX = "ledex-exec-"
_LEAF_PREFIX = "ledex-pool-"
_KILL_SECONDS = 5.0
_RMDIR_SECONDS = 2.0
_PER_PROCESS = {  # what holds without the controller
    "memory": "memory_mb limits each process's address space only (RLIMIT_AS), not the "
              "sandbox's whole process tree: a program's forks together can use more",
    "pids": "max_processes holds per sandbox user only (RLIMIT_NPROC, which does not bind root, "
            "i.e. sandbox='none' as root)",
}


class CgroupsUnavailable(RuntimeError):
    """cgroups were required but cannot be used here (the message says why)."""


# -- small file helpers -----------------------------------------------------------------------
def _read(path):
    with open(path) as f:
        return f.read()


def _write(path, value):
    with open(path, "w") as f:
        f.write(str(value))


def _pids_in(directory):
    try:
        return {int(p) for p in _read(os.path.join(directory, "cgroup.procs")).split()}
    except FileNotFoundError:
        return set()


def _rmdir(path, seconds=_RMDIR_SECONDS):
    """Remove one cgroup directory; True when it is gone. Killed processes can keep a cgroup
    busy for a moment after they die, so EBUSY is retried."""
    end = time.monotonic() + seconds
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() >= end:
                log.debug("executors: cannot remove cgroup %s: %s", path, e)
                return False
        time.sleep(0.01)


# -- detection --------------------------------------------------------------------------------
class Found:
    """Usable hierarchy: version ('v1'/'v2') and this process's own cgroup per controller."""

    def __init__(self, version, dirs, missing=()):
        self.version = version
        self.dirs = dirs  # {controller: directory of our own cgroup}
        self.missing = tuple(missing)


def _membership(proc_file):
    """{controller: path} from /proc/self/cgroup ('' is the v2 hierarchy)."""
    out = {}
    for line in _read(proc_file).splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for name in parts[1].split(",") if parts[1] else [""]:
                out[name] = parts[2]
    return out


def _own_dir(mount, path):
    """Our cgroup's directory under `mount`; containers without a cgroup namespace mount their
    own cgroup as the root, so fall back to the mount itself when we are listed there."""
    own = os.path.normpath(os.path.join(mount, path.lstrip("/")))
    if os.path.isdir(own):
        return own
    if os.getpid() in _pids_in(mount):
        return mount
    return None


def _detect_v2(root, member):
    mount = next((d for d in (root, os.path.join(root, "unified"))
                  if os.path.isfile(os.path.join(d, "cgroup.controllers"))), None)
    if mount is None:
        return None, "no cgroup2 mount"
    if "" not in member:
        return None, "this process is in no v2 cgroup"
    own = _own_dir(mount, member[""])
    if own is None:
        return None, f"this process's cgroup {member['']} is not under {mount}"
    have = _read(os.path.join(own, "cgroup.controllers")).split()
    found = [c for c in CONTROLLERS if c in have]
    if not found:
        return None, f"no memory or pids controller in {own}"
    return Found("v2", {c: own for c in found}, [c for c in CONTROLLERS if c not in have]), ""


def _v1_mount(root, controller):
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return None
    for name in names:
        path = os.path.join(root, name)
        if controller in name.split(",") and os.path.isdir(path) and not os.path.islink(path):
            return path
    return None


def _detect_v1(root, member):
    dirs, why = {}, []
    for c in CONTROLLERS:
        mount = _v1_mount(root, c)
        if mount is None or c not in member:
            why.append(f"no {c} hierarchy")
            continue
        own = _own_dir(mount, member[c])
        if own is None:
            why.append(f"this process's {c} cgroup {member[c]} is not under {mount}")
            continue
        dirs[c] = own
    if not dirs:
        return None, ", ".join(why)
    return Found("v1", dirs, [c for c in CONTROLLERS if c not in dirs]), ""


def detect(root=None, proc_file=None):
    """The hierarchy to use, preferring the one with more of our controllers (v2 on a tie);
    raises CgroupsUnavailable naming what is missing."""
    root = root or ROOT
    try:
        member = _membership(proc_file or PROC_SELF_CGROUP)
    except OSError as e:
        raise CgroupsUnavailable(f"cannot read {proc_file or PROC_SELF_CGROUP}: {e.strerror}")
    if not os.path.isdir(root):
        raise CgroupsUnavailable(f"{root} does not exist")
    v2, why2 = _detect_v2(root, member)
    v1, why1 = _detect_v1(root, member)
    if v2 is None and v1 is None:
        raise CgroupsUnavailable(f"cgroup v2: {why2}; cgroup v1: {why1}")
    if v1 is None or (v2 is not None and len(v2.dirs) >= len(v1.dirs)):
        return v2
    return v1


# -- v2 delegation ----------------------------------------------------------------------------
_v2_lock = threading.Lock()
_v2_moved = {}  # own dir -> (leaf we moved into, controllers we enabled)


def _enable_v2(own, controllers):
    """Let `own`'s children use `controllers`. v2 refuses that while `own` holds processes
    (unless it is the root), so when this process is alone there it moves into a leaf first."""
    control = os.path.join(own, "cgroup.subtree_control")
    with _v2_lock:
        need = [c for c in controllers if c not in _read(control).split()]
        if not need:
            return
        try:
            _write(control, " ".join("+" + c for c in need))
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise CgroupsUnavailable(f"cannot enable {', '.join(need)} for the children "
                                         f"of {own}: {e.strerror}")
        others = _pids_in(own) - {os.getpid()}
        if others:
            raise CgroupsUnavailable(
                f"{own} also holds {len(others)} other process(es), and cgroup v2 lets no "
                "process sit beside child cgroups that use controllers; start the pool in a "
                "cgroup of its own (e.g. systemd-run --scope -p Delegate=yes)")
        leaf = os.path.join(own, f"{_LEAF_PREFIX}{os.getpid()}")
        try:
            os.makedirs(leaf, exist_ok=True)
            _write(os.path.join(leaf, "cgroup.procs"), os.getpid())
            _write(control, " ".join("+" + c for c in need))
        except OSError as e:
            raise CgroupsUnavailable(f"cannot delegate {own} (moving this process to {leaf}): "
                                     f"{e.strerror}")
        _v2_moved[own] = (leaf, need)


def _restore_v2():
    """At exit: give back what _enable_v2 changed, so no leaf directory outlives us."""
    for own, (leaf, enabled) in list(_v2_moved.items()):
        if not leaf.endswith(f"-{os.getpid()}"):
            continue  # a forked copy: the leaf is its parent's
        try:
            _write(os.path.join(own, "cgroup.subtree_control"), " ".join("-" + c for c in enabled))
            _write(os.path.join(own, "cgroup.procs"), os.getpid())
            _rmdir(leaf)
        except OSError as e:  # another user of `own` still needs the controllers
            log.debug("executors: cannot leave cgroup leaf %s: %s", leaf, e)


# -- one sandbox ------------------------------------------------------------------------------
class Sandbox:
    """One worker's cgroup: one directory (v2) or one per controller (v1)."""

    def __init__(self, version, dirs):
        self.version = version
        self.dirs = dirs  # {controller: directory}

    @property
    def paths(self):
        return sorted(set(self.dirs.values()))

    def wrap(self, argv):
        """argv that puts itself into this cgroup, then execs `argv` under the same pid: the
        process is inside before it can start anything, and whatever it starts is too."""
        n = len(self.paths)
        join = " && ".join(f'echo $$ > "${i + 1}"' for i in range(n))
        script = (f'{{ {join}; }} || {{ echo "executors: cannot join the sandbox cgroup $1" >&2; '
                  f'exit 125; }}; shift {n}; exec "$@"')
        return ["/bin/sh", "-c", script, "sh",
                *[os.path.join(p, "cgroup.procs") for p in self.paths], *argv]

    def read(self, controller, name):
        """Contents of a controller file (e.g. 'memory.peak'), or None if there is none."""
        try:
            return _read(os.path.join(self.dirs[controller], name)).strip()
        except (KeyError, OSError):
            return None

    def memory_peak(self):
        """Most memory the sandbox has used at once, in bytes (None: not measured here)."""
        value = self.read("memory", "memory.peak" if self.version == "v2"
                          else "memory.max_usage_in_bytes")
        return int(value) if value and value.isdigit() else None

    def members(self):
        out = set()
        for path in self.paths:
            out |= _pids_in(path)
        return out

    def kill(self):
        """SIGKILL everything still inside (forks racing us included); True once empty."""
        kill_file = os.path.join(self.paths[0], "cgroup.kill")
        if self.version == "v2" and os.path.exists(kill_file):
            try:
                _write(kill_file, 1)
            except OSError:
                pass
        end = time.monotonic() + _KILL_SECONDS
        while True:
            pids = self.members()
            if not pids:
                return True
            if time.monotonic() >= end:
                return False
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.002)

    def remove(self):
        """Kill what is left inside and remove the directories; True when all are gone."""
        emptied = self.kill()
        return all([_rmdir(p) for p in self.paths]) and emptied


def _limit_files(version, controller, memory_bytes, pids_max):
    """(file, value, required) to write into a new sandbox cgroup, in order; the optional
    ones are written where the kernel offers them (swap accounting may be off)."""
    if controller == "pids":
        return [("pids.max", pids_max, True)]
    if version == "v2":
        return [("memory.max", memory_bytes, True), ("memory.swap.max", 0, False)]
    return [("memory.limit_in_bytes", memory_bytes, True),
            ("memory.memsw.limit_in_bytes", memory_bytes, False),
            ("memory.swappiness", 0, False)]


# -- the pool's cgroups -----------------------------------------------------------------------
_open = set()
_open_lock = threading.Lock()


class PoolCgroups:
    """The pool's parent cgroup(s) and one sandbox cgroup per worker process below them."""

    def __init__(self, found, memory_bytes, pids_max):
        self.version = found.version
        self.controllers = tuple(found.dirs)
        self.missing = found.missing
        self.memory_bytes = int(memory_bytes)
        self.pids_max = int(pids_max)
        self.owner = os.getpid()
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._live = set()
        name = f"{_BASE_PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self._bases = {c: os.path.join(own, name) for c, own in found.dirs.items()}
        own = ""
        try:
            for own in sorted(set(found.dirs.values())):
                _sweep(own)
                if self.version == "v2":
                    _enable_v2(own, self.controllers)
                base = os.path.join(own, name)
                os.mkdir(base, 0o755)
                if self.version == "v2":
                    _write(os.path.join(base, "cgroup.subtree_control"),
                           " ".join("+" + c for c in self.controllers))
        except OSError as e:
            self.close()
            raise CgroupsUnavailable(f"cannot create a cgroup in {own}: {e.strerror}")
        except CgroupsUnavailable:
            self.close()
            raise
        with _open_lock:
            _open.add(self)

    @property
    def base_paths(self):
        return sorted(set(self._bases.values()))

    def describe(self):
        limits = {"memory": f"{self.memory_bytes >> 20} MB", "pids": f"{self.pids_max} tasks"}
        return (f"cgroup {self.version} under {', '.join(self.base_paths)}: "
                f"{' and '.join(limits[c] for c in self.controllers)} per sandbox")

    def create(self, index):
        """A new, limited cgroup for worker `index` (raises OSError if the kernel refuses)."""
        name = f"w{index}-{next(self._ids)}"
        box = Sandbox(self.version, {c: os.path.join(b, name) for c, b in self._bases.items()})
        try:
            for path in box.paths:
                os.mkdir(path, 0o755)
            for c, path in box.dirs.items():
                for fname, value, required in _limit_files(self.version, c, self.memory_bytes,
                                                           self.pids_max):
                    fpath = os.path.join(path, fname)
                    if required or os.path.exists(fpath):
                        _write(fpath, value)
        except OSError:
            box.remove()
            raise
        with self._lock:
            self._live.add(box)
        return box

    def remove(self, box):
        """Kill and remove a worker's cgroup (kept for another try at close() if it is busy)."""
        if box.remove():
            with self._lock:
                self._live.discard(box)

    def close(self):
        """Remove every sandbox cgroup left, then the pool's own directories."""
        with self._lock:
            boxes, self._live = list(self._live), set()
        for box in boxes:
            if not box.remove():
                log.warning("executors: could not remove the sandbox cgroup %s", box.paths)
        for base in self.base_paths:
            if not _rmdir(base):
                log.warning("executors: could not remove the cgroup %s", base)
        self._bases = {}
        with _open_lock:
            _open.discard(self)


def _sweep(own):
    """Remove empty directories a crashed pool left behind (its pid no longer runs). Only
    removes: whatever is still inside belongs to someone, and is not ours to kill."""
    try:
        names = os.listdir(own)
    except OSError:
        return
    for name in names:
        m = re.fullmatch(rf"(?:{_BASE_PREFIX}(\d+)-[0-9a-f]+|{_LEAF_PREFIX}(\d+))", name)
        if not m or _alive(int(m.group(1) or m.group(2))):
            continue
        path = os.path.join(own, name)
        for sub in os.listdir(path) if os.path.isdir(path) else ():
            if os.path.isdir(os.path.join(path, sub)):
                _rmdir(os.path.join(path, sub), 0)
        _rmdir(path, 0)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


@atexit.register
def _close_all():
    """Pools that were never closed: their cgroups go with this process, not after it (a forked
    copy of this process that exits leaves its parent's alone)."""
    for pc in list(_open):
        if pc.owner == os.getpid():
            pc.close()
    _restore_v2()


def resolve(mode, memory_bytes, pids_max, warn, root=None):
    """(PoolCgroups or None, version or None, reason) for a requested mode; `warn(key, msg)`
    is called once when the limits then hold only per process."""
    if mode not in MODES:
        raise ValueError(f"cgroups must be one of {MODES}, got {mode!r}")
    if mode == "none":
        return None, None, "cgroups='none': rlimits only (per process)"
    try:
        pc = PoolCgroups(detect(root), memory_bytes, pids_max)
    except CgroupsUnavailable as e:
        if mode == "required":
            raise
        warn("cgroups", f"executors: cgroups unavailable ({e}): {_PER_PROCESS['memory']}, and "
                        f"{_PER_PROCESS['pids']}. Run as root, or in a delegated cgroup v2 "
                        "subtree, for limits per sandbox.")
        return None, None, str(e)
    if pc.missing:
        warn(("cgroups", pc.missing),
             f"executors: cgroup {pc.version} offers no {' or '.join(pc.missing)} controller "
             f"here: " + "; ".join(_PER_PROCESS[c] for c in pc.missing))
    return pc, pc.version, pc.describe()
