"""Safety suite: hostile programs. Each asserts the verdict (never a false pass), no effect on the
host, the pool still serving correct results afterwards, and bounded wall time.

Cases that are harmless without namespaces run under both the bubblewrap pool and the
no-namespace fallback; cases that need isolation to be safe or meaningful (killing every
process, reading host files) run under bubblewrap only.
"""
import os
import socket
import textwrap
import time

import pytest

from executor_helpers import POOL_KW, assert_healthy
from executors import ExecutionPool, Program, SandboxUnavailable, TestCase

A = TestCase.assertion
WALL = 15.0  # seconds; generous for a loaded 2-core box, far below "hangs"

EVIL_EQ = """
class Always:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = object.__hash__
"""
LOOP_CHECK = "def check(candidate):\n    for x in [1]:\n        assert candidate(x) == 2\n"
LOWERED_CHECK = "def check(candidate):\n    assert candidate(1) == 2\n"


def wrong_answer_tests():
    """The same wrong answer seen by every kind of test: assertions, a call test, check
    functions with and without a loop, a generator assert."""
    return [A("assert f(1) == 2"), TestCase.call("f", [1], 2), TestCase.check(LOWERED_CHECK, "f"),
            TestCase.check(LOOP_CHECK, "f"), A("assert all(f(x) == 2 for x in [1])")]


def run_one(pool, code, tests, setup=""):
    t0 = time.monotonic()
    [result] = pool.run([Program("adv", textwrap.dedent(code), tests, setup_code=setup)])
    elapsed = time.monotonic() - t0
    assert elapsed < WALL, f"took {elapsed:.1f}s"
    return result


def assert_never_passes(result, statuses=("failed", "error", "timeout")):
    assert not result.passed, result
    assert result.tests, result
    for t in result.tests:
        assert t.status in statuses, (t, result.feedback)
    assert result.feedback.startswith("The code above fails")


# -- cases that are safe without namespaces: run in both modes ---------------------------------

CASES = {
    "infinite_loop": ("""
        def f(x):
            while True:
                pass
        """, [A("assert f(1) == 2")], ("timeout",)),
    "infinite_loop_at_import": ("""
        while True:
            pass
        def f(x):
            return 2
        """, [A("assert f(1) == 2"), A("assert f(2) == 2")], ("timeout",)),
    "loop_ignoring_alarms": ("""
        import signal
        for sig in (signal.SIGALRM, signal.SIGINT, signal.SIGTERM, signal.SIGXCPU):
            signal.signal(sig, signal.SIG_IGN)
        def f(x):
            signal.alarm(0)
            signal.setitimer(signal.ITIMER_REAL, 0)
            while True:
                try:
                    pass
                except BaseException:
                    pass
        """, [A("assert f(1) == 2")], ("timeout",)),
    "sleeping": ("""
        import time
        def f(x):
            time.sleep(60)
            return 2
        """, [A("assert f(1) == 2")], ("timeout",)),
    "eq_always_true": (EVIL_EQ + "def f(x):\n    return Always()\n", wrong_answer_tests(),
                       ("failed", "error")),
    "int_subclass_with_forged_eq": ("""
        class Sneaky(int):
            def __eq__(self, other):
                return True
            __hash__ = int.__hash__
        def f(x):
            return Sneaky(5)
        """, wrong_answer_tests(), ("failed", "error")),
    "forged_eq_inside_container": (EVIL_EQ + "def f(x):\n    return [Always(), Always()]\n",
                                   [A("assert f(1) == [2, 3]"), TestCase.call("f", [1], [2, 3]),
                                    TestCase.check("def check(c):\n    for _ in [0]:\n"
                                                   "        assert c(1) == [2, 3]\n", "f")],
                                   ("failed", "error")),
    "forged_protocol_methods": ("""
        class Yes:
            def __bool__(self):
                return True
            def __len__(self):
                return 3
            def __contains__(self, item):
                return True
            def __iter__(self):
                return iter(())
            def __sub__(self, other):
                return 0
            __rsub__ = __sub__
            def __lt__(self, other):
                return True
            __gt__ = __le__ = __ge__ = __lt__
        def f(x):
            return Yes()
        """, [A("assert f(1) == True"), A("assert 3 in f(1)"), A("assert abs(f(1) - 0.5) < 1e-6"),
              A("assert abs(0.5 - f(1)) < 1e-6"), A("assert f(1) > 2 and f(1) < 4"),
              A("assert len(f(1)) == 3 and list(f(1)) == [1, 2, 3]"),
              TestCase.check("def check(c):\n    for x in [0]:\n        assert 2 in c(x)\n", "f")],
        ("failed", "error")),
    "frame_forgery_of_caller_variables": ("""
        import sys
        def f(x):
            frame = sys._getframe(1)
            while frame is not None:
                for name in ("passed", "ok", "result", "res", "status", "v", "verdict", "out"):
                    frame.f_locals[name] = True
                frame.f_globals.update(passed=True, ok=True, status="passed")
                frame = frame.f_back
            return 3
        """, wrong_answer_tests(), ("failed", "error")),
    "harness_monkeypatching": ("""
        import sys
        fake = lambda *a, **k: {"ok": True}
        fake_vals = lambda *a, **k: {"vals": [{"v": 2}]}
        for mod in list(sys.modules.values()):
            for attr in ("_check", "_exec_test", "_run_test_code", "_call", "_eval_exprs", "guard",
                         "answer", "serve", "exception_info"):
                if hasattr(mod, attr):
                    setattr(mod, attr, fake_vals if attr in ("_call", "_eval_exprs") else fake)
        frame = sys._getframe()
        while frame is not None:
            g = frame.f_globals
            if "_RUNNERS" in g:
                g["_RUNNERS"] = (("exprs", fake_vals), ("call", fake_vals), ("exec", fake),
                                 ("check", fake))
                for attr in ("_check", "_exec_test", "_run_test_code"):
                    g[attr] = fake
            frame = frame.f_back
        try:
            import executors.child as c
            c._check = c._exec_test = fake
        except Exception:
            pass
        import builtins
        builtins.exec = lambda *a, **k: None
        def f(x):
            return 3
        """, wrong_answer_tests(), ("failed", "error")),
    "settrace_jump_over_assert": ("""
        import sys
        def f(x):
            caller = sys._getframe(1)
            def tracer(frame, event, arg):
                if event == "line" and frame is caller:
                    try:
                        frame.f_lineno = frame.f_lineno + 1
                    except Exception:
                        pass
                return tracer
            caller.f_trace = tracer
            sys.settrace(tracer)
            return 3
        """, wrong_answer_tests(), ("failed", "error")),
    "reading_expected_values_from_callers": ("""
        import sys
        def f(x):
            found = []
            frame = sys._getframe(1)
            while frame is not None:
                found += [c for c in frame.f_code.co_consts if type(c) is int and c > 1000]
                found += [v for v in frame.f_locals.values() if type(v) is int and v > 1000]
                found += [v for v in frame.f_globals.values() if type(v) is int and v > 1000]
                frame = frame.f_back
            return found[0] if found else -1
        """, [A("assert f(1) == 98765"), TestCase.call("f", [1], 98765),
              TestCase.check("def check(candidate):\n    assert candidate(1) == 98765\n", "f")],
        ("failed",)),
    "sys_exit_before_tests": ("""
        import sys
        sys.exit(0)
        def f(x):
            return 2
        """, [A("assert f(1) == 2"), TestCase.call("f", [1], 2)], ("error",)),
    "os_exit_before_tests": ("""
        import os
        os._exit(0)
        def f(x):
            return 2
        """, [A("assert f(1) == 2"), TestCase.check(LOOP_CHECK, "f")], ("error",)),
    "system_exit_inside_test": ("""
        def f(x):
            raise SystemExit(0)
        """, wrong_answer_tests(), ("error",)),
    "setsid_fork_escape": ("""
        import os, time
        def f(x):
            pid = os.fork()
            if pid == 0:
                os.setsid()
                if os.fork() == 0:
                    while True:
                        time.sleep(0.01)
                os._exit(0)
            os.waitpid(pid, 0)
            return 3
        """, [A("assert f(1) == 2")], ("failed", "error")),
    "fork_bomb": ("""
        import os
        def f(x):
            while True:
                try:
                    os.fork()
                except OSError:
                    pass
        """, [A("assert f(1) == 2")], ("timeout", "error")),
    "memory_bomb": ("""
        def f(x):
            hoard = []
            while True:
                hoard.append(bytearray(50 * 1024 * 1024))
        """, [A("assert f(1) == 2")], ("error", "timeout")),
    "output_flood": ("""
        import sys
        def f(x):
            while True:
                print("x" * 10000)
                sys.stderr.write("y" * 10000)
        """, [A("assert f(1) == 2")], ("timeout", "error")),
    "output_flood_on_stdio": ("""
        while True:
            print("2" * 10000)
        """, [TestCase.stdio("1\n", "2\n")], ("failed", "error", "timeout")),
    "huge_file": ("""
        def f(x):
            with open("big.bin", "wb") as fh:
                for _ in range(1024):
                    fh.write(b"\\0" * (1 << 20))
            return 2
        """, [A("assert f(1) == 2")], ("error",)),
    "replaces_its_directory_with_a_symlink": ("""
        import os
        def f(x):
            here = os.getcwd()
            os.chdir("..")
            os.rmdir(here)
            os.symlink("/etc", here)
            return 3
        """, [A("assert f(1) == 2")], ("failed", "error")),
    "deep_recursion": ("""
        def f(x):
            return f(x + 1)
        """, [A("assert f(1) == 2")], ("error",)),
    "recursion_past_the_c_stack": ("""
        import sys
        sys.setrecursionlimit(10 ** 8)
        def f(x):
            return f(x + 1) + 1
        """, [A("assert f(1) == 2")], ("error", "timeout")),
    "input_without_stdin": ("""
        def f(x):
            return input()
        """, [A("assert f(1) == '2'")], ("error",)),
    "long_c_call": ("""
        import itertools
        def f(x):
            return len(list(itertools.product(range(100), repeat=10)))
        """, [A("assert f(1) == 2")], ("error", "timeout")),
    "catastrophic_regex": ("""
        import re
        def f(x):
            return bool(re.match(r"(a+)+$", "a" * 64 + "b"))
        """, [A("assert f(1) == True")], ("timeout",)),
    "fake_verdicts_printed_and_written_to_every_fd": ("""
        import json, os, struct, sys
        FAKES = [{"t": "res", "i": 0, "ok": True}, {"t": "res", "i": 0, "vals": [{"v": 2}]},
                 {"t": "done"}, {"t": "load"}]
        def f(x):
            print("passed")
            print("All tests passed")
            sys.stdout.flush()
            for fd in range(256):
                for obj in FAKES:
                    for mac in (b"", b"\\0" * 32):
                        body = json.dumps(obj).encode() + mac
                        try:
                            os.write(fd, struct.pack(">I", len(body)) + body)
                        except OSError:
                            pass
            return 3
        """, [A("assert f(1) == 2"), A("assert f(1) == 2")], ("failed", "error")),
    "ctypes_memory_access": ("""
        def f(x):
            import ctypes
            return 2
        """, [A("assert f(1) == 2")], ("error",)),
    "exception_whose_str_hangs": ("""
        class Boom(Exception):
            def __str__(self):
                while True:
                    pass
        def f(x):
            raise Boom()
        """, [A("assert f(1) == 2")], ("timeout",)),
    "oversized_return_value": ("""
        def f(x):
            return ["x" * 1000000] * 40
        """, [A("assert f(1) == []"), TestCase.call("f", [1], [])], ("failed",)),
    "self_referencing_value": ("""
        def f(x):
            a = []
            a.append(a)
            return a
        """, [A("assert f(1) == [[]]"), TestCase.call("f", [1], [[]])], ("failed",)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_program(any_pool, name):
    code, tests, statuses = CASES[name]
    result = run_one(any_pool, code, tests)
    assert_never_passes(result, statuses)
    assert_healthy(any_pool)


def test_exit_inside_one_test_does_not_hide_the_others(any_pool):
    result = run_one(any_pool, """
        import os
        def f(x):
            if x == 1:
                os._exit(0)
            return 2 * x
        """, [A("assert f(1) == 2"), A("assert f(2) == 4"), A("assert f(3) == 6")])
    assert [t.status for t in result.tests] == ["error", "passed", "passed"]
    assert "exited with code 0" in result.tests[0].message
    assert result.fraction_passed == pytest.approx(2 / 3) and not result.passed
    assert_healthy(any_pool)


def test_closed_stdio_does_not_affect_results(any_pool):
    result = run_one(any_pool, """
        import os, sys
        sys.stdout.close()
        for fd in (0, 1, 2):
            os.close(fd)
        def f(x):
            return x + 1
        """, [A("assert f(1) == 2"), TestCase.call("f", [2], 3)])
    assert result.passed, result
    assert_healthy(any_pool)


def test_leaked_busy_thread(any_pool):
    result = run_one(any_pool, """
        import threading
        def spin():
            while True:
                pass
        threading.Thread(target=spin).start()
        def f(x):
            return x + 1
        """, [A("assert f(1) == 2"), A("assert f(2) == 3")])
    assert result.passed, result
    assert_healthy(any_pool)


def test_network_is_unreachable(any_pool):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.3)
    port = listener.getsockname()[1]
    try:
        result = run_one(any_pool, f"""
            import socket
            def f(x):
                s = socket.create_connection(("127.0.0.1", {port}), timeout=0.5)
                s.sendall(b"exfiltrated")
                return "connected"
            """, [A("assert f(1) == 'connected'")])
        assert_never_passes(result, ("error", "failed"))
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()
    assert_healthy(any_pool)


def test_environment_of_the_trainer_is_not_visible(monkeypatch):
    monkeypatch.setenv("LEDEX_EXEC_SECRET", "hunter2")
    for mode in ("bwrap", "none"):
        try:
            pool = ExecutionPool(sandbox=mode, allow_unsandboxed=True, **dict(POOL_KW, workers=1))
        except SandboxUnavailable:
            continue  # the no-namespace run below still checks the environment
        with pool:
            result = run_one(pool, """
                def f(x):
                    seen = ""
                    for path in ("/proc/self/environ", "/proc/1/environ", "/proc/1/cmdline"):
                        try:
                            seen += open(path, "rb").read().decode("latin-1")
                        except OSError:
                            pass
                    return seen
                """, [A("assert 'hunter2' in f(1)"), A("assert 'LEDEX_EXEC_SECRET' in f(1)")])
            assert_never_passes(result, ("failed",))


def test_empty_test_list_is_an_error(any_pool):
    [result] = any_pool.run([Program("none", "def f():\n    return 1\n", [])])
    assert not result.passed and result.error and result.fraction_passed == 0.0


# -- cases that need namespaces (bubblewrap only) ------------------------------------------------

def test_killing_the_parent_and_init(bwrap_pool):
    result = run_one(bwrap_pool, """
        import os, signal
        def f(x):
            for pid in (os.getppid(), 1):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            return 3
        """, [A("assert f(1) == 2"), A("assert f(2) == 2")])
    assert_never_passes(result, ("failed",))
    assert_healthy(bwrap_pool)


def test_kill_everything(bwrap_pool):
    result = run_one(bwrap_pool, """
        import os, signal
        def f(x):
            os.kill(-1, signal.SIGKILL)
            return 2
        """, [A("assert f(1) == 2"), A("assert f(2) == 2")])
    assert_never_passes(result, ("error",))
    assert_healthy(bwrap_pool)


def test_host_files_are_invisible(bwrap_pool, tmp_path):
    os.chmod(tmp_path, 0o755)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    os.chmod(secret, 0o644)  # readable by anyone: only the namespace hides it
    result = run_one(bwrap_pool, f"""
        import os
        def f(x):
            return open({str(secret)!r}).read()
        def listing(path):
            try:
                return sorted(os.listdir(path))
            except OSError:
                return None
        """, [A("assert f(1) == 'TOPSECRET'"),
              A(f"assert listing({str(tmp_path)!r}) == ['secret.txt']"),
              A("assert listing('/root/..') is not None and 'shared' in listing('/work')")])
    assert_never_passes(result, ("failed", "error"))
    assert_healthy(bwrap_pool)


def test_host_files_cannot_be_written_or_deleted(bwrap_pool, tmp_path):
    os.chmod(tmp_path, 0o777)
    keep = tmp_path / "keep.txt"
    keep.write_text("original")
    os.chmod(keep, 0o666)
    result = run_one(bwrap_pool, f"""
        import os, shutil
        def f(x):
            done = 0
            for action in (lambda: open({str(keep)!r}, "w").write("owned"),
                           lambda: os.remove({str(keep)!r}),
                           lambda: open({str(tmp_path / 'new.txt')!r}, "w").write("new"),
                           lambda: open("/etc/ledex-owned", "w").write("x"),
                           lambda: shutil.rmtree({str(tmp_path)!r})):
                try:
                    action()
                    done += 1
                except OSError:
                    pass
            return done
        """, [A("assert f(1) > 0")])
    assert_never_passes(result, ("failed",))
    assert result.tests[0].actual == 0
    assert keep.read_text() == "original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    assert not os.path.exists("/etc/ledex-owned")
    assert_healthy(bwrap_pool)


def test_private_tmp_is_fresh_for_every_program(bwrap_pool):
    first = run_one(bwrap_pool, """
        import os
        def f(x):
            open("left-behind.txt", "w").write("x")
            open("/tmp/also-here.txt", "w").write("x")
            return sorted(os.listdir("."))
        """, [A("assert f(1) == ['left-behind.txt']")])
    assert first.passed, first
    second = run_one(bwrap_pool, """
        import os
        def f(x):
            return sorted(os.listdir(".")), os.path.exists("/tmp/also-here.txt"), os.getcwd()
        """, [A("assert f(1)[:2] == ([], False)")])
    assert second.passed, second


# -- round 2: the verdict belongs to the judge process (issue 11's attack classes) -------------
# Every case below is a wrong program (f(x) should be x + 1; it never computes that) trying to
# pass anyway, against tests the old in-child judging ran in the program's own process: check
# functions with loops, generator and multi-statement asserts, expected sides that are not
# literals, test helpers. None may pass, in either mode, and the pool must stay correct.

ROUND2_TESTS = [
    A("assert f(1) == 2", "f"), A("assert all(f(x) == x + 1 for x in range(3))", "f"),
    A("for x in range(3):\n    assert f(x) == x + 1\nassert f(5) == 6", "f"),
    A("from collections import Counter\nassert Counter([f(1)]) == Counter([2])", "f"),
    A("assert f(10) == reference(10)", "f"), A("assert f(5) == Fraction(6, 1)", "f"),
    TestCase.call("f", [1], 2),
    TestCase.check("def check(candidate):\n    import random\n    for _ in range(5):\n"
                   "        x = random.randint(0, 9)\n        assert candidate(x) == x + 1\n", "f"),
]
ROUND2_SETUP = "from fractions import Fraction\n\ndef reference(x):\n    return x + 1\n"

ROUND2 = {
    "frames_walked_to_the_result_sender": """
        import sys
        def f(x):
            frame = sys._getframe()
            while frame is not None:  # every sender and answer function up the stack
                for value in list(frame.f_locals.values()) + list(frame.f_globals.values()):
                    if callable(value) and getattr(value, "__name__", "") in ("send", "answer"):
                        for i in range(50):
                            try:
                                value({"t": "res", "i": i, "ok": True, "status": "passed",
                                       "v": True})
                            except Exception:
                                pass
                frame = frame.f_back
            return "garbage"
        """,
    "mac_key_read_from_closures_and_frames_written": """
        import os, sys, json, struct, hashlib
        def f(x):
            frame, keys = sys._getframe(), []
            while frame is not None:
                for value in list(frame.f_locals.values()):
                    for cell in getattr(value, "__closure__", None) or ():
                        try:
                            keys.append(cell.cell_contents)
                        except ValueError:
                            pass
                frame = frame.f_back
            for fd in range(3, 64):  # forge a frame on every descriptor, with whatever was found
                payload = json.dumps({"t": "res", "i": 0, "ok": True, "v": 2}).encode()
                try:
                    os.write(fd, struct.pack(">I", len(payload)) + payload)
                except OSError:
                    pass
            return "garbage"
        """,
    "builtins_replaced": """
        import builtins
        builtins.all = lambda *a, **k: True
        builtins.any = lambda *a, **k: True
        builtins.isinstance = lambda *a, **k: True
        builtins.type = lambda *a, **k: int
        builtins.vars = lambda *a, **k: {}
        builtins.repr = lambda *a, **k: "2"
        builtins.AssertionError = type("Nope", (Exception,), {})
        def f(x):
            return "garbage"
        """,
    "element_swapped_after_the_check_by_a_gc_callback": """
        import gc
        box = []
        def swap(phase, info):  # runs during whatever allocates next: encoding the answer
            for item in box:
                item[:] = [True] * len(item)
        gc.callbacks.append(swap)
        def f(x):
            out = ["garbage"] * 3
            box.append(out)
            gc.collect()
            return out
        """,
    "harness_module_reimported_and_patched": """
        import sys, importlib
        for name in ("executors.child", "executors.values", "executors.protocol"):
            try:
                module = importlib.import_module(name)
                for attr in dir(module):
                    if callable(getattr(module, attr)):
                        setattr(module, attr, lambda *a, **k: {"v": 2, "ok": True})
            except Exception:
                pass
        def f(x):
            return "garbage"
        """,
    "ctypes_under_another_name": """
        import importlib.machinery, importlib.util, glob, sys, os
        def f(x):
            for path in glob.glob(os.path.join(os.path.dirname(os.__file__), "lib-dynload", "_ctypes*")):
                try:
                    loader = importlib.machinery.ExtensionFileLoader("innocent", path)
                    spec = importlib.util.spec_from_file_location("innocent", path, loader=loader)
                    module = importlib.util.module_from_spec(spec)
                    return "loaded"
                except BaseException:
                    pass
            return "garbage"
        """,
    "subinterpreter_without_the_audit_hook": """
        def f(x):
            for name in ("_xxsubinterpreters", "_testcapi", "_testinternalcapi"):
                try:
                    module = __import__(name)
                    return "loaded " + name
                except BaseException:
                    pass
            return "garbage"
        """,
}


@pytest.mark.parametrize("name", sorted(ROUND2))
def test_round2_a_wrong_program_cannot_make_the_judge_pass_it(any_pool, name):
    result = run_one(any_pool, ROUND2[name], ROUND2_TESTS, setup=ROUND2_SETUP)
    assert result.tests and all(t.status != "passed" for t in result.tests), \
        [(t.test, t.status, t.message) for t in result.tests]
    assert_healthy(any_pool)


ANCESTORS = """
import os

def ancestors(n=4):
    # the worker, the judge, the pool (and whatever started it), by parent pid
    pid, out = os.getppid(), []
    for _ in range(n):
        out.append(pid)
        try:
            with open(f"/proc/{pid}/stat") as stat:
                pid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            break
    return out
"""


def test_round2_a_program_cannot_speak_for_the_next_one(plain_pool):
    """Without namespaces, a program writes forged answers into every pipe it can open of its
    worker, judge and pool (through /proc); the next, unrelated wrong program still fails."""
    forger = ANCESTORS + textwrap.dedent("""
        import json, struct
        def f(x):
            written = 0
            for pid in ancestors():
                for fd in range(0, 32):
                    for answer in ({"v": 2}, {"t": "res", "r": [[0, {"status": "passed"}]]},
                                   {"t": "done"}):
                        payload = json.dumps(answer).encode()
                        try:
                            with open(f"/proc/{pid}/fd/{fd}", "wb", buffering=0) as pipe:
                                pipe.write(struct.pack(">I", len(payload)) + payload)
                                written += 1
                        except OSError:
                            pass
            return written
        """)
    wrong = "def f(x):\n    return x\n"
    for _ in range(3):
        first = run_one(plain_pool, forger, [A("assert f(1) == 2", "f")])
        second = run_one(plain_pool, wrong, [A("assert f(1) == 2", "f"), TestCase.call("f", [1], 2)])
        assert not first.passed and first.tests[0].actual == 0, first  # nothing could be opened
        assert [t.status for t in second.tests] == ["failed", "failed"], second
    assert_healthy(plain_pool)


def test_round2_the_pools_memory_and_environment_are_unreadable(plain_pool):
    """Without namespaces: the trainer's, judge's and worker's /proc files stay closed to the
    program (another uid, or not dumpable)."""
    code = ANCESTORS + textwrap.dedent("""
        def f(x):
            found = []
            for pid in ancestors():
                for name in ("environ", "mem", "maps"):
                    try:
                        with open(f"/proc/{pid}/{name}", "rb") as fh:
                            if fh.read(1):
                                found.append(f"{pid}/{name}")
                    except OSError:
                        pass
            return found
        """)
    result = run_one(plain_pool, code, [TestCase.call("f", [1], [])])
    assert result.passed, result.tests[0].actual


def test_round2_without_namespaces_the_trainer_process_is_not_dumpable():
    """Programs may share the trainer's uid when it is not root: its /proc files must be
    root's alone, which is what non-dumpable means."""
    code = textwrap.dedent("""
        import ctypes, warnings
        warnings.simplefilter("ignore")
        from executors import ExecutionPool
        libc = ctypes.CDLL(None)
        before = libc.prctl(3, 0, 0, 0, 0)
        ExecutionPool(workers=1, sandbox="none", allow_unsandboxed=True).close()
        print(before, libc.prctl(3, 0, 0, 0, 0))
    """)
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=repo)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "0"], out.stdout


def test_round2_without_namespaces_programs_never_run_as_root(plain_pool):
    result = run_one(plain_pool, "import os\ndef f():\n    return [os.getuid(), os.geteuid()]\n",
                     [TestCase.call("f", [])])
    uid, euid = result.tests[0].actual
    assert (uid, euid) != (0, 0) and (os.getuid() != 0 or min(uid, euid) > 0), result


@pytest.mark.parametrize("attack", [
    "os.mkfifo(os.path.join(OUT, 'fifo'))",
    "os.mknod(os.path.join(OUT, 'node'))",
    "fd = os.open(OUT, os.O_RDONLY); os.close(os.open('dirfd', os.O_WRONLY | os.O_CREAT, dir_fd=fd))",
    "fd = os.open(OUT, os.O_RDONLY); os.mkdir('dirfd_dir', dir_fd=fd)",
    "import sqlite3; sqlite3.connect(os.path.join(OUT, 'db.sqlite')).execute('create table t(x)')",
    "import sqlite3; c = sqlite3.connect(':memory:'); c.execute(\"attach database '\" + os.path.join(OUT, 'a.db') + \"' as a\"); c.execute('create table a.t(x)')",
    "import _posixsubprocess; r, w = os.pipe(); _posixsubprocess.fork_exec(['/bin/touch', os.path.join(OUT, 'spawned')], [b'/bin/touch'], True, (w,), None, None, -1, -1, -1, -1, -1, -1, r, w, False, False, -1, None, None, None, -1, None, False); import time; time.sleep(0.5)",
    "import subprocess; subprocess.run(['/bin/touch', os.path.join(OUT, 'spawned')])",
    "import signal; signal.pidfd_send_signal(os.pidfd_open(VICTIM), signal.SIGKILL)",
    "os.kill(VICTIM, 9)",
])
def test_round2_no_host_effects_without_namespaces(plain_pool, attack):
    """A world-writable host directory and live host processes of the sandbox's own uids: only
    the hook stands between the program and them."""
    import shutil
    import subprocess
    import tempfile

    from executors import sandbox as sandbox_mod

    out = tempfile.mkdtemp(prefix="ledex-host-")
    os.chmod(out, 0o777)
    as_uid = {} if os.getuid() else {"user": 0}
    victims = []
    for slot in plain_pool._slots:  # (as root, each worker runs programs under a uid of its own)
        if as_uid:
            as_uid["user"] = sandbox_mod.worker_uid(slot.number)
        victims.append(subprocess.Popen(["sleep", "60"], **as_uid))
    try:
        body = "".join(f"            {line}\n" for line in attack.split("; "))
        code = (f"import os\nOUT = {out!r}\nVICTIMS = {[v.pid for v in victims]!r}\n\n"
                f"def f():\n    failed = None\n    for VICTIM in VICTIMS:  # (only one is ours)\n"
                f"        try:\n{body}        except OSError as e:\n            failed = e\n"
                f"    if failed:\n        raise failed\n    return 'done'\n")
        result = run_one(plain_pool, code, [TestCase.call("f", [], "done")])
        assert not result.passed, result
        assert os.listdir(out) == [], os.listdir(out)
        assert all(v.poll() is None for v in victims), "a host process was signalled"
    finally:
        for v in victims:
            v.kill()
            v.wait()
        shutil.rmtree(out, ignore_errors=True)
    assert_healthy(plain_pool)
