"""Per-sandbox cgroups: memory_mb and max_processes bind a sandbox's whole process tree."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest

from executor_helpers import POOL_KW, assert_healthy, descendants
from executors import ExecutionPool, Program, SandboxUnavailable, TestCase
from executors import cgroups as cgroups_mod
from executors import sandbox as sandbox_mod

A = TestCase.assertion
KW = dict(POOL_KW, workers=1, per_test_timeout=10.0, program_timeout=30.0)
OK = Program("ok", "def inc(x):\n    return x + 1\n", [A("assert inc(1) == 2")])


def make_pool(**kw):
    """A bubblewrap pool with cgroups (skips where this machine offers neither)."""
    try:
        pool = ExecutionPool(sandbox="bwrap", **dict(KW, **kw))
    except SandboxUnavailable as e:
        pytest.skip(f"bubblewrap cannot create namespaces here: {e}")
    if pool.cgroups is None:
        pool.close()
        pytest.skip(f"no cgroups here: {pool.cgroups_reason}")
    return pool


def tree_pss(pid):
    """Anonymous memory (bytes) of `pid` and everything below it, each shared page counted once
    (proportional set size): what the sandbox's processes took from the host. Pages of shared
    libraries are left out: the host had them in its page cache already."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        total += int(fields.get("Pss_Anon", fields.get("Pss", "0 kB")).split()[0]) << 10
    return total


class Sampler(threading.Thread):
    """Highest tree_pss of the worker (and the cgroup's own peak) while a program runs."""

    def __init__(self, pool):
        super().__init__(daemon=True)
        [self.pid], [self.box] = pool.worker_pids(), pool.worker_cgroups()
        self.pss = 0
        self.cgroup_peak = None
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            self.pss = max(self.pss, tree_pss(self.pid))
            self.cgroup_peak = self.box.memory_peak() or self.cgroup_peak  # gone if it died
            time.sleep(0.01)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()


FORK_AND_ALLOCATE = textwrap.dedent("""
    import os, time
    def f(x):
        kids = []
        for _ in range(8):
            pid = os.fork()
            if pid == 0:
                try:
                    buf = bytearray(400 << 20)
                    buf[::4096] = b"\\1" * (len(buf) // 4096)  # touch every page
                    time.sleep(2)  # and hold it while the others allocate
                finally:
                    os._exit(0)
            kids.append(pid)
        return sum(os.waitpid(pid, 0)[1] == 0 for pid in kids)
    """)


def test_forked_children_share_one_memory_limit():
    pool = make_pool(memory_mb=512)
    with pool:
        limit = (512 + cgroups_mod.WORKER_MB + pool.tmp_mb) << 20
        [box] = pool.worker_cgroups()
        assert int(box.read("memory", "memory.max" if pool.cgroups == "v2"
                            else "memory.limit_in_bytes")) == limit
        swap = {"v1": ("memory.memsw.limit_in_bytes", str(limit)), "v2": ("memory.swap.max", "0")}
        name, value = swap[pool.cgroups]
        assert box.read("memory", name) in (None, value)  # no way around it through swap
        with Sampler(pool) as s:
            [r] = pool.run([Program("forks", FORK_AND_ALLOCATE, [A("assert f(1) == 8")])])
        print(f"\nsandbox peak: sampled {s.pss >> 20} MB, cgroup {(s.cgroup_peak or 0) >> 20} MB, "
              f"limit {limit >> 20} MB; verdict {[t.status for t in r.tests]} {r.error}")
        # without the cgroup all eight hold 400 MB at once (~3.2 GB from the host); the sampler
        # reads one process after another, so memory freed by one and taken by another between
        # two reads can be counted twice: a little slack
        assert s.pss <= limit + (128 << 20), f"the sandbox took {s.pss >> 20} MB"
        assert not r.passed  # not every child could hold its 400 MB
        assert s.cgroup_peak is not None and 400 << 20 <= s.cgroup_peak <= limit  # it did try
        assert_healthy(pool)


FORK_COUNT = textwrap.dedent("""
    import os, time
    def forks():
        n = 0
        while n < 1000:
            try:
                pid = os.fork()
            except OSError:
                return n
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            n += 1
        return n
    """)


def test_fork_bomb_is_bounded_by_the_sandbox_pids_limit():
    pool = make_pool(max_processes=24)
    with pool:
        [box] = pool.worker_cgroups()
        assert box.read("pids", "pids.max") == "24"
        # bubblewrap's monitor, the worker and the program itself count too
        [r] = pool.run([Program("bomb", FORK_COUNT, [A("assert 0 < forks() <= 21")])])
        assert r.passed, (r.tests[0].message, r.error)
        events = box.read("pids", "pids.events")
        if events is not None:  # the cgroup, not RLIMIT_NPROC, refused the forks
            assert int(dict(line.split() for line in events.splitlines())["max"]) > 0
        # (the verdict goes out just before the worker kills what the program left)
        assert_healthy(pool)
        assert box.members() == set(pool.worker_pids()) | set(descendants(pool.worker_pids()[0]))


def oks(n):
    return [Program(f"ok{i}", OK.code, [A(f"assert inc({i}) == {i + 1}")]) for i in range(n)]


def test_no_cgroup_directories_are_left():
    pool = make_pool(workers=2, max_jobs_per_worker=1)  # every program replaces its worker
    bases = {os.path.dirname(p) for box in pool.worker_cgroups() for p in box.paths}
    assert bases and all(os.path.basename(b).startswith("ledex-exec-") for b in bases)
    try:
        for _ in range(3):
            assert all(r.passed for r in pool.run(oks(6)))
            for base in bases:  # replaced workers' cgroups are gone (new ones start on demand)
                assert _subdirs(base) == []
    finally:
        pool.close()
    assert not any(os.path.exists(b) for b in bases)


def test_a_worker_killed_from_outside_takes_its_cgroup_along():
    with make_pool() as pool:
        [old] = pool.worker_cgroups()
        [victim] = pool.worker_pids()
        for pid in descendants(victim):  # the worker inside bubblewrap
            os.kill(pid, signal.SIGKILL)
        assert all(r.passed for r in pool.run(oks(3)))
        [new] = pool.worker_cgroups()
        assert new is not old and not any(os.path.exists(p) for p in old.paths)
        assert all(os.path.exists(p) for p in new.paths)


def _subdirs(path):
    return [n for n in os.listdir(path) if os.path.isdir(os.path.join(path, n))]


def test_a_pool_never_closed_leaves_no_cgroup_behind():
    code = textwrap.dedent("""
        import os, sys
        from executors import ExecutionPool
        pool = ExecutionPool(workers=2, sandbox="auto", cache_size=0, allow_unsandboxed=True)
        if pool.cgroups is None:
            sys.exit(3)
        print(" ".join(os.path.dirname(p) for box in pool.worker_cgroups() for p in box.paths))
        if os.fork() == 0:  # a forked copy exiting must not take its parent's cgroups along
            sys.exit(0)
        os.wait()
        assert all(os.path.exists(p) for box in pool.worker_cgroups() for p in box.paths)
        """)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=root)
    if out.returncode == 3:
        pytest.skip("no cgroups here")
    assert out.returncode == 0, out.stderr
    bases = set(out.stdout.split())
    assert bases and not any(os.path.exists(b) for b in bases)


def test_plain_workers_get_cgroups_too():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        pool = ExecutionPool(sandbox="none", allow_unsandboxed=True, **dict(KW, memory_mb=256))
    with pool:
        if pool.cgroups is None:
            pytest.skip(f"no cgroups here: {pool.cgroups_reason}")
        [box] = pool.worker_cgroups()
        assert box.members() == set(pool.worker_pids())
        assert box.memory_peak() is not None and box.memory_peak() < (256 + 64) << 20
        assert pool.run([OK])[0].passed


def _unavailable_pool(monkeypatch, root, proc_lines=None, tmp_path=None):
    monkeypatch.setattr(cgroups_mod, "ROOT", root)
    if proc_lines is not None:
        proc = tmp_path / "cgroup"
        proc.write_text(proc_lines)
        monkeypatch.setattr(cgroups_mod, "PROC_SELF_CGROUP", str(proc))
    try:
        return ExecutionPool(sandbox="bwrap", **KW)
    except SandboxUnavailable as e:
        pytest.skip(f"bubblewrap cannot create namespaces here: {e}")


@pytest.mark.parametrize("where", ["nonexistent", "read-only"])
def test_without_cgroups_the_pool_warns_once_and_still_runs(monkeypatch, tmp_path, where):
    monkeypatch.setattr(sandbox_mod, "_warned", set())
    if where == "nonexistent":
        args, why = (str(tmp_path / "no-cgroup-fs"),), "does not exist"
    else:  # sysfs refuses mkdir (as a read-only cgroup mount would) and has a `memory` dir
        if not os.path.isdir("/sys/devices/system/memory"):
            pytest.skip("no /sys/devices/system/memory here")
        args, why = ("/sys/devices/system", "4:memory:/\n", tmp_path), "cannot create a cgroup"
    with pytest.warns(RuntimeWarning) as caught:
        pool = _unavailable_pool(monkeypatch, *args)
    messages = [str(w.message) for w in caught if "cgroup" in str(w.message)]
    assert len(messages) == 1, messages
    assert why in messages[0] and "memory_mb" in messages[0] and "max_processes" in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        second = _unavailable_pool(monkeypatch, *args)
    second.close()
    with pool:
        assert pool.cgroups is None and why in pool.cgroups_reason
        assert pool.worker_cgroups() == []
        assert_healthy(pool)
    with pytest.raises(cgroups_mod.CgroupsUnavailable, match=why):
        ExecutionPool(sandbox="bwrap", cgroups="required", **KW)


def test_cgroups_none_and_bad_modes():
    with ExecutionPool(sandbox="bwrap", cgroups="none", **KW) as pool:
        assert pool.cgroups is None and pool.worker_cgroups() == []
        assert pool.run([OK])[0].passed
    with pytest.raises(ValueError, match="cgroups must be one of"):
        ExecutionPool(sandbox="bwrap", cgroups="v3", **KW)


def test_v2_layout(tmp_path, monkeypatch):
    """The files a v2 pool writes (on a fake tree: this kernel's controllers may sit on v1)."""
    root, own = tmp_path / "cg", tmp_path / "cg" / "app.slice"
    own.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    (own / "cgroup.controllers").write_text("memory pids\n")
    (own / "cgroup.subtree_control").write_text("")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/app.slice\n")
    monkeypatch.setattr(cgroups_mod, "PROC_SELF_CGROUP", str(proc))
    found = cgroups_mod.detect(str(root))
    assert found.version == "v2" and found.dirs == {"memory": str(own), "pids": str(own)}
    pc = cgroups_mod.PoolCgroups(found, 600 << 20, 32)
    try:
        [base] = pc.base_paths
        assert os.path.dirname(base) == str(own)
        assert (own / "cgroup.subtree_control").read_text() == "+memory +pids"
        assert open(os.path.join(base, "cgroup.subtree_control")).read() == "+memory +pids"
        box = pc.create(3)
        [path] = box.paths
        assert os.path.basename(path) == "w3-0"
        assert open(os.path.join(path, "memory.max")).read() == str(600 << 20)
        assert open(os.path.join(path, "pids.max")).read() == "32"
        # the wrapper joins first, then execs the command under the same pid
        out = subprocess.run(box.wrap(["/bin/sh", "-c", "echo $$"]), capture_output=True,
                             text=True, check=True)
        assert open(os.path.join(path, "cgroup.procs")).read().strip() == out.stdout.strip()
        open(os.path.join(path, "cgroup.procs"), "w").close()  # (a real kernel empties it)
    finally:  # a real cgroup directory can be removed with its files in it; these cannot
        monkeypatch.setattr(cgroups_mod, "_rmdir",
                            lambda p, seconds=0: shutil.rmtree(p, ignore_errors=True) or True)
        pc.close()
    assert not os.path.exists(base)


def test_detection_names_what_is_missing(tmp_path, monkeypatch):
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/\n")
    monkeypatch.setattr(cgroups_mod, "PROC_SELF_CGROUP", str(proc))
    (tmp_path / "cgroup.controllers").write_text("cpu io\n")
    with pytest.raises(cgroups_mod.CgroupsUnavailable,
                       match="v2: no memory or pids controller.*v1: no memory hierarchy"):
        cgroups_mod.detect(str(tmp_path))
