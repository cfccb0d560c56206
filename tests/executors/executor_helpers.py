"""Helpers shared by the executor tests."""
import os
import time

from executors import Program, TestCase

POOL_KW = dict(workers=2, per_test_timeout=2.0, load_timeout=4.0, program_timeout=20.0,
               memory_mb=512, cache_size=0, max_processes=64)


def descendants(pid):
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
    out, stack = [], [pid]
    while stack:
        for c in children.get(stack.pop(), ()):
            out.append(c)
            stack.append(c)
    return out


def leftover_processes(pool, wait=2.0):
    """Processes below the workers beyond the workers themselves (bwrap adds its monitor). A
    verdict goes out just before the worker kills what its program left: allow it `wait` s."""
    extra = 1 if pool.sandbox == "bwrap" else 0
    deadline = time.monotonic() + wait
    while True:
        left = {pid: descendants(pid)[extra:] for pid in pool.worker_pids()}
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(0.01)


def assert_healthy(pool):
    """The pool still answers correctly, and nothing a program started is still alive."""
    ok = Program("health-ok", "def inc(x):\n    return x + 1\n",
                 [TestCase.assertion("assert inc(1) == 2"), TestCase.call("inc", [41], 42)])
    bad = Program("health-bad", "def inc(x):\n    return x + 2\n",
                  [TestCase.assertion("assert inc(1) == 2")])
    for _ in range(pool.workers):  # reach every worker
        r_ok, r_bad = pool.run([ok, bad])
        assert r_ok.passed and r_ok.fraction_passed == 1.0, r_ok
        assert not r_bad.passed and r_bad.tests[0].status == "failed", r_bad
    assert all(not v for v in leftover_processes(pool).values()), leftover_processes(pool)
