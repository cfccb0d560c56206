"""The child's audit hook against hostile programs, without the pool: each program runs in a
fresh interpreter right after `install_audit_hook`, and the test looks for what it did to the
host (files in a directory outside the work dir, a process it tried to kill), not only at what
the hook said. "SUCCEEDED" in the output means an attack got through."""
import dis
import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

from executors import audit

AUDIT_PY = audit.__file__
HAVE_NUMPY = importlib.util.find_spec("numpy") is not None


def _origin(name):
    """Where an extension module's file is, without importing it here."""
    spec = importlib.util.find_spec(name)
    return spec.origin if spec is not None else None


CTYPES_SO = _origin("_ctypes")
MATH_SO = _origin("math")
TESTCAPI_SO = _origin("_testcapi")
XXSUBINTERPRETERS_SO = _origin("_xxsubinterpreters")
POSIXSUBPROCESS_SO = _origin("_posixsubprocess")
TOUCH = shutil.which("touch")

# Loads audit.py by path (as the child does, after its imports), installs the hook, then runs
# the program with `attempt`, which runs one attack and says whether it got through.
DRIVER = r'''
import importlib.util, sys
audit_path, workdir, outside, preload, code = sys.argv[1:6]
for name in preload.split():
    __import__(name)
spec = importlib.util.spec_from_file_location("executors.audit", audit_path)
audit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(audit)
audit.install_audit_hook(workdir or None)
del audit, spec


def attempt(attack):
    try:
        attack()
    except BaseException as e:
        print("refused", attack.__name__, type(e).__name__, e)
    else:
        print("SUCCEEDED", attack.__name__)


exec(compile(code, "<program>", "exec"), {"__name__": "__main__", "attempt": attempt,
                                          "OUTSIDE": outside})
print("END")
'''


@pytest.fixture
def host(tmp_path):
    """(workdir, outside): the program's directory, and host files it must not touch."""
    workdir, outside = tmp_path / "workdir", tmp_path / "outside"
    workdir.mkdir()
    (outside / "victim_dir").mkdir(parents=True)
    (outside / "victim.txt").write_text("victim")
    (workdir / "mine.txt").write_text("mine")
    return workdir, outside


def run(program, workdir, outside, fenced=True, preload="", **values):
    """Run `program` (with `values` formatted in) under the hook; its output. `fenced`: the
    no-namespace mode (workdir given), else the bubblewrap mode (workdir=None)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": str(workdir),
           "HOME": str(workdir)}
    code = textwrap.dedent(program).format(**values)
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, AUDIT_PY, str(workdir) if fenced else "", str(outside),
         preload, code], cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
    output = proc.stdout + proc.stderr
    assert "END" in proc.stdout, output
    return output


def snapshot(top):
    """All a program could change under `top`: names, kinds, modes, owners, times, contents."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            content = open(path, "rb").read() if stat.S_ISREG(st.st_mode) else None
            state[path] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, content)
    return state


def assert_untouched(program, host, fenced=True, preload="", **values):
    """The program's attacks all fail and leave `outside` exactly as it was."""
    workdir, outside = host
    before = snapshot(outside)
    output = run(program, workdir, outside, fenced, preload, **values)
    assert "SUCCEEDED" not in output, output
    assert snapshot(outside) == before, output
    return output


LEGIT = """
import bisect, collections, datetime, decimal, fractions, functools, heapq, itertools, json
import math, os, pathlib, random, re, shutil, string, tempfile, typing
import asyncio, subprocess  # importable; starting a process is what is refused
{numpy}
Point = collections.namedtuple("Point", "x y", defaults=[0])
assert Point(1) == (1, 0)
assert open(OUTSIDE + "/victim.txt").read() == "victim"
assert pathlib.Path(OUTSIDE, "victim.txt").read_text() == "victim"
with open("out.txt", "w") as f:
    f.write("hello")
os.close(os.open("raw.txt", os.O_CREAT | os.O_WRONLY))
os.makedirs("a/b/c")
with open("a/b/c/deep.txt", "w") as f:
    f.write("x")
os.rename("out.txt", "a/out.txt")
os.chdir("a")
open("../up.txt", "w").close()
os.chdir("..")
os.remove("up.txt")
here = os.open("a", os.O_RDONLY)
os.mkdir("made_via_dir_fd", dir_fd=here)
os.close(here)
assert os.path.isdir("a/made_via_dir_fd")
shutil.rmtree("a")
with tempfile.TemporaryDirectory() as tmp:
    os.mkdir(os.path.join(tmp, "sub"))
    open(os.path.join(tmp, "sub", "f"), "w").close()
with tempfile.NamedTemporaryFile("w") as f:
    f.write("x")
os.remove("raw.txt")
pathlib.Path("p.txt").write_text("via pathlib")
assert pathlib.Path("p.txt").read_text() == "via pathlib"
pathlib.Path("p.txt").unlink()
pathlib.Path("pdir").mkdir()
(pathlib.Path("pdir") / "t").touch()
shutil.rmtree(pathlib.Path("pdir"))
assert fractions.Fraction(1, 3) + 1 == fractions.Fraction(4, 3)
assert decimal.Decimal("0.1") * 3 == decimal.Decimal("0.3")
print("LEGIT-OK", sum(math.comb(10, k) for k in range(11)))
"""


@pytest.mark.parametrize("fenced", [True, False], ids=["no-namespaces", "bwrap"])
def test_legit_programs_still_work(host, fenced):
    workdir, _ = host
    numpy = "import numpy\nassert int(numpy.arange(4).sum()) == 6" if HAVE_NUMPY else ""
    output = assert_untouched(LEGIT, host, fenced, numpy=numpy)
    assert "LEGIT-OK 1024" in output
    assert sorted(os.listdir(workdir)) == ["mine.txt"]


def test_without_namespaces_nothing_fences_writes(host):
    """(bwrap mode: the mount namespace is the fence, the hook leaves writes alone.)"""
    workdir, outside = host
    run("open(OUTSIDE + '/new.txt', 'w').close()", workdir, outside, fenced=False)
    assert (outside / "new.txt").exists()


DIR_FD_ATTACKS = """
import os, shutil
fd = os.open(OUTSIDE, os.O_RDONLY)
root = os.open("/", os.O_RDONLY)
victim = os.open(OUTSIDE + "/victim.txt", os.O_RDONLY)
def os_open(): os.close(os.open("new", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
def opener(): open("new2", "w", opener=lambda p, f: os.open(p, f, dir_fd=fd)).close()
def mkdir(): os.mkdir("newdir", dir_fd=fd)
def mkdir_from_root(): os.mkdir(OUTSIDE.lstrip("/") + "/newdir2", dir_fd=root)
def rename_out(): os.rename("mine.txt", "moved", dst_dir_fd=fd)
def replace_in(): os.replace("victim.txt", "stolen", src_dir_fd=fd)
def unlink(): os.unlink("victim.txt", dir_fd=fd)
def rmdir(): os.rmdir("victim_dir", dir_fd=fd)
def link(): os.link("mine.txt", "linked", dst_dir_fd=fd)
def symlink(): os.symlink("/etc", "sym", dir_fd=fd)
def chmod(): os.chmod("victim.txt", 0o777, dir_fd=fd)
def chown(): os.chown("victim.txt", 4321, 4321, dir_fd=fd)
def utime(): os.utime("victim.txt", (0, 0), dir_fd=fd)
def chmod_fd(): os.chmod(victim, 0o700)
def chown_fd(): os.chown(victim, 4321, 4321)
def utime_fd(): os.utime(victim, (1, 1))
def rmtree(): shutil.rmtree(OUTSIDE + "/victim_dir")  # unlinks with dir_fd
for attack in (os_open, opener, mkdir, mkdir_from_root, rename_out, replace_in, unlink, rmdir,
               link, symlink, chmod, chown, utime, chmod_fd, chown_fd, utime_fd, rmtree):
    attempt(attack)
"""


def test_dir_fd_and_descriptor_paths_stay_inside(host):
    """Relative paths resolve against the dir_fd (a host directory here), not the cwd, and a
    descriptor passed as the path is checked for where it is open."""
    output = assert_untouched(DIR_FD_ATTACKS, host)
    assert output.count("refused") == 17, output


TAMPERING = """
import os, posixpath
class Liar:
    calls = 0
    def __fspath__(self):  # what the call uses must be what the hook checks
        Liar.calls += 1
        return OUTSIDE + "/lied" if Liar.calls == 1 else os.getcwd() + "/fine"
def lying_fspath(): os.mkdir(Liar())
def monkeypatched_realpath():
    posixpath.abspath = lambda path: os.getcwd() + "/fine"
    posixpath._joinrealpath = lambda *args: (os.getcwd() + "/fine", True)
    open(OUTSIDE + "/patched", "w").close()
attempt(lying_fspath)
attempt(monkeypatched_realpath)
"""


def test_hook_cannot_be_lied_to_or_monkeypatched(host):
    assert_untouched(TAMPERING, host)


def test_hook_code_reads_no_global():
    """A program can rebind module globals and builtins: the code the hook runs must have bound
    everything it uses at install time."""
    def nested(code):
        yield code
        for const in code.co_consts:
            if isinstance(const, type(code)):
                yield from nested(const)

    hook_time = [audit._text, audit._resolve, audit._fd_path, audit._dir_fds, audit._outside,
                 audit._stub("x", ValueError)]
    codes = [c for f in hook_time for c in nested(f.__code__)]
    codes += [c for c in nested(audit.install_audit_hook.__code__) if c.co_name == "hook"]
    assert len(codes) == len(hook_time) + 1
    for code in codes:
        loads = {i.opname for i in dis.get_instructions(code)} & {
            "LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_CLASSDEREF"}
        assert not loads, (code.co_name, loads)


FIFOS = """
import os, stat, sys, importlib
from importlib.machinery import ModuleSpec
def mkfifo(): os.mkfifo(OUTSIDE + "/f1")
def mknod(): os.mknod(OUTSIDE + "/f2", 0o600 | stat.S_IFIFO)
def posix_module(): import posix; posix.mkfifo(OUTSIDE + "/f3")
def through_self(): os.stat.__self__.mkfifo(OUTSIDE + "/f4")
def supports_set(): [f for f in os.supports_dir_fd if f.__name__ == "mkfifo"][0](OUTSIDE + "/f5")
def reloaded(): import posix; importlib.reload(posix).mkfifo(OUTSIDE + "/f6")
def create_builtin():
    import _imp
    _imp.create_builtin(ModuleSpec("posix", None)).mkfifo(OUTSIDE + "/f7")
def fresh_import():
    del sys.modules["posix"]
    import posix
    posix.mkfifo(OUTSIDE + "/f8")
for attack in (mkfifo, mknod, posix_module, through_self, supports_set, reloaded,
               create_builtin, fresh_import):
    attempt(attack)
"""


def test_no_fifos_or_nodes(host):
    """os.mkfifo/os.mknod raise no audit event: stubs, and no way to a fresh posix module."""
    assert_untouched(FIFOS, host)


SIGNALS = """
import os, signal, threading
from importlib.machinery import ModuleSpec
def kill(): os.kill({pid}, signal.SIGKILL)
def killpg(): os.killpg({pid}, signal.SIGKILL)
def pidfd(): signal.pidfd_send_signal(os.pidfd_open({pid}), signal.SIGKILL)
def proc_dir_as_pidfd():
    signal.pidfd_send_signal(os.open("/proc/{pid}", os.O_RDONLY), signal.SIGKILL)
def fresh_signal_module():
    import _imp
    fresh = _imp.create_builtin(ModuleSpec("_signal", None))
    fresh.pidfd_send_signal(os.open("/proc/{pid}", os.O_RDONLY), signal.SIGKILL)
def pthread_kill(): signal.pthread_kill(threading.get_ident(), 0)
for attack in (kill, killpg, pidfd, proc_dir_as_pidfd, fresh_signal_module, pthread_kill):
    attempt(attack)
"""


def test_no_signals_to_other_processes(host):
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        assert_untouched(SIGNALS, host, pid=victim.pid)
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


PROCESSES = """
import os, sys, importlib.util
def run_touch(fork_exec, name):
    r, w = os.pipe()
    pid = fork_exec([{touch!r}.encode(), (OUTSIDE + "/" + name).encode()], [{touch!r}.encode()],
                    True, (w,), None, None, -1, -1, -1, -1, -1, -1, r, w, True, False, -1,
                    None, None, None, -1, None, False)
    os.waitpid(pid, 0)
def posixsubprocess(): import _posixsubprocess; run_touch(_posixsubprocess.fork_exec, "p1")
def subprocess_alias(): import subprocess; run_touch(subprocess._fork_exec, "p2")
def fresh_copy():
    spec = importlib.util.spec_from_file_location("_posixsubprocess", {origin!r})
    run_touch(importlib.util.module_from_spec(spec).fork_exec, "p3")
def posix_spawn(): os.waitpid(os.posix_spawn({touch!r}, ["touch", OUTSIDE + "/p4"], {{}}), 0)
def fork():
    pid = os.fork()
    if pid == 0:
        open(OUTSIDE + "/p5", "w").close()
        os._exit(0)
    os.waitpid(pid, 0)
def system(): os.system("touch " + OUTSIDE + "/p6")
for attack in (posixsubprocess, subprocess_alias, fresh_copy, posix_spawn, fork, system):
    attempt(attack)
"""


@pytest.mark.parametrize("preload", ["", "subprocess"], ids=["fresh", "subprocess-loaded"])
def test_no_processes(host, preload):
    """_posixsubprocess.fork_exec raises no audit event: a stub where it is already loaded
    (subprocess keeps its own alias), and no loading it afresh."""
    if TOUCH is None:
        pytest.skip("no touch(1)")
    assert_untouched(PROCESSES, host, preload=preload, touch=TOUCH, origin=POSIXSUBPROCESS_SO)


SQLITE = """
import sqlite3
def connect_outside(): sqlite3.connect(OUTSIDE + "/db.sqlite").execute("create table t(x)")
def attach():
    db = sqlite3.connect(":memory:")
    db.execute("attach database '" + OUTSIDE + "/attached.sqlite' as a")
    db.execute("create table a.t(x)")
def vacuum_into():
    db = sqlite3.connect(":memory:")
    db.execute("create table t(x)")
    db.execute("vacuum into '" + OUTSIDE + "/vacuumed.sqlite'")
for attack in (connect_outside, attach, vacuum_into):
    attempt(attack)
"""


def test_no_sqlite_without_namespaces(host):
    """SQL itself writes anywhere (ATTACH, VACUUM INTO), so SQLite is refused altogether."""
    assert_untouched(SQLITE, host)


SQLITE_EXTENSIONS = """
import sys
def enable(): sys.audit("sqlite3.enable_load_extension", None, True)
def load(): sys.audit("sqlite3.load_extension", None, "/tmp/evil.so")
attempt(enable)
attempt(load)
"""


@pytest.mark.parametrize("fenced", [True, False], ids=["no-namespaces", "bwrap"])
def test_no_sqlite_extensions(host, fenced):
    """(This build has no load_extension; the events are what CPython raises where it does.)"""
    assert_untouched(SQLITE_EXTENSIONS, host, fenced)


SUBINTERPRETERS = """
import importlib.util
CODE = "open(" + repr(OUTSIDE + "/from_subinterpreter") + ", 'w').close()"
def load(name, path):
    return importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, path))
def xxsubinterpreters():
    import _xxsubinterpreters as interpreters
    interpreters.run_string(interpreters.create(), CODE)
def cached_copy():  # loaded before the hook, then dropped from sys.modules
    interpreters = load("_xxsubinterpreters", {xxsub!r})
    interpreters.run_string(interpreters.create(), CODE)
def testcapi(): import _testcapi; _testcapi.run_in_subinterp(CODE)
def testcapi_renamed(): load("x._testcapi", {testcapi!r}).run_in_subinterp(CODE)
for attack in (xxsubinterpreters, cached_copy, testcapi, testcapi_renamed):
    attempt(attack)
"""


@pytest.mark.parametrize("fenced", [True, False], ids=["no-namespaces", "bwrap"])
def test_no_subinterpreters(host, fenced):
    """Code in a subinterpreter runs without the audit hook."""
    if XXSUBINTERPRETERS_SO is None or TESTCAPI_SO is None:
        pytest.skip("this build lacks _xxsubinterpreters or _testcapi")
    assert_untouched(SUBINTERPRETERS, host, fenced, preload="_xxsubinterpreters",
                     xxsub=XXSUBINTERPRETERS_SO, testcapi=TESTCAPI_SO)


CTYPES = """
import importlib.machinery, importlib.util, os, shutil, _imp
def load(name, path):
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    return importlib.util.module_from_spec(spec)
def str_subclass(): __import__(type("S", (str,), {{}})("_ctypes"))
def renamed(): load("evil._ctypes", {ctypes_so!r})
def create_dynamic():
    _imp.create_dynamic(importlib.machinery.ModuleSpec("_ctypes", None, origin={ctypes_so!r}))
def copied():
    shutil.copy({ctypes_so!r}, "copy.so")
    load("y._ctypes", os.path.abspath("copy.so"))
def own_extension():  # any native code from where the program can write
    shutil.copy({math_so!r}, "m.so")
    load("math", os.path.abspath("m.so"))
def memfd():
    fd = os.memfd_create("m")
    os.write(fd, open({math_so!r}, "rb").read())
    load("math", "/proc/self/fd/%d" % fd)
for attack in (str_subclass, renamed, create_dynamic, copied, own_extension, memfd):
    attempt(attack)
"""


@pytest.mark.parametrize("fenced", [True, False], ids=["no-namespaces", "bwrap"])
def test_no_ctypes_or_foreign_extensions(host, fenced):
    if not (os.path.isfile(CTYPES_SO or "") and os.path.isfile(MATH_SO or "")):
        pytest.skip("this build has _ctypes or math built in (or no _ctypes)")
    assert_untouched(CTYPES, host, fenced, ctypes_so=CTYPES_SO, math_so=MATH_SO)


FENCE_RULES = """
import os, socket
def chdir_out(): os.chdir(OUTSIDE)
def down_and_up():  # sub could be moved up between the check and the call
    os.makedirs("sub/sub")
    open("sub/sub/../x.txt", "w").close()
def climb_two():  # as could the cwd
    os.chdir("sub/sub")
    open("../../x.txt", "w").close()
def symlink_inside(): os.symlink("mine.txt", "alias")  # a link could lead a checked path out
def name_lookup(): socket.gethostbyname("localhost")
for attack in (chdir_out, symlink_inside, name_lookup, down_and_up, climb_two):
    attempt(attack)
"""


def test_fence_refuses_what_races_could_turn_outward(host):
    """Without namespaces: no leaving the work dir, no '..' but one leading a relative path, no
    new symlinks (a path is checked before the call runs; these would let a thread redirect it)."""
    workdir, _ = host
    assert_untouched(FENCE_RULES, host)
    assert sorted(os.listdir(workdir)) == ["mine.txt", "sub"]
