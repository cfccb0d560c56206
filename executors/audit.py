"""The child's audit hook: what a program may not do even inside the sandbox, and, without
namespaces, the fence that keeps it off the host (processes, signals, sockets, writes outside its
private directory).

The program runs in this very interpreter, so the hook is written to survive it. At call time it
looks up no global or builtin name (a program can rebind those, or monkeypatch os.path); it holds
only immutable data and C functions, in default arguments (rebinding those raises an audit
event, refused below); and it never runs the program's code (no __fspath__, no methods of str
subclasses). Calls that raise no audit event in CPython 3.11 (os.mkfifo, os.mknod,
signal.pidfd_send_signal, _posixsubprocess.fork_exec, ...) are replaced by stubs when there
are no namespaces, and so is _imp.create_builtin, which would build fresh copies of them.

Limits, without namespaces: a path is checked before the call runs, so another thread (or a
signal handler) that swaps the descriptor behind a dir_fd between the two can still win; new
symlinks, and '..' anywhere but at the start of a relative path, are refused so that renames
cannot. Native code reached some
other way (crafted bytecode; ctypes classes the parent process loaded, which stay reachable
through object.__subclasses__()) gets past any audit hook.

Stdlib only: this module is imported inside the sandbox.
"""
import _imp
import os
import posix
import sys

# Audit events refused inside the child: tracing (a trace function can jump over a failing
# assert), raw memory (ctypes) and object-graph walks (gc), new interpreters (code run there has
# no audit hook), SQLite extensions (native code), and more audit hooks (they would run the
# program's code in the middle of ours). Legit solutions do not need them.
_BLOCKED_EVENTS = frozenset({
    "sys.settrace", "sys.setprofile", "sys._current_frames", "gc.get_objects", "gc.get_referrers",
    "gc.get_referents", "cpython.PyInterpreterState_New", "sqlite3.enable_load_extension",
    "sqlite3.load_extension", "sys.addaudithook",
})
_BLOCKED_PREFIXES = ("ctypes.",)
# Modules refused under any name: checked on every dotted component of the name (an extension's
# init function is named after the last one) and on an extension's file name. Raw memory,
# interpreter internals, and subinterpreters.
_BLOCKED_MODULES = frozenset({
    "ctypes", "_ctypes", "_testcapi", "_testinternalcapi", "_xxsubinterpreters",
    "_xxinterpchannels",
})
# Without namespaces nothing else isolates the program, so the hook also refuses to start
# processes, send signals, open sockets, look up names, write the system log, use SQLite (ATTACH
# DATABASE and VACUUM INTO write wherever the SQL says), create symlinks (one could later lead a
# checked path out), or change files outside the program's private directory.
_NO_NAMESPACE_EVENTS = frozenset({
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
    "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
    "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo", "syslog.openlog",
    "syslog.syslog", "sqlite3.connect", "os.symlink",
})
# ... and the modules whose loaded copies lost their silent calls must not be loaded afresh.
_NO_NAMESPACE_MODULES = frozenset({"posix", "_signal", "_posixsubprocess", "_imp"})
# Calls that raise no audit event in 3.11 yet reach other processes or create files; without
# namespaces they become stubs in every module that holds them.
_SILENT_CALLS = (
    ("posix", ("mkfifo", "mknod", "pidfd_open", "setpriority", "sched_setaffinity",
               "sched_setparam", "sched_setscheduler")),
    ("os", ("mkfifo", "mknod", "pidfd_open", "setpriority", "sched_setaffinity",
            "sched_setparam", "sched_setscheduler")),
    ("_signal", ("pidfd_send_signal",)),
    ("signal", ("pidfd_send_signal",)),
    ("_posixsubprocess", ("fork_exec",)),
    ("subprocess", ("_fork_exec",)),
)
# event -> ((position of a path that must stay inside the work dir, position of the dir_fd it
# is relative to, or -1), ...), as CPython 3.11 passes them (C passes a path object's fspath
# result; shutil.rmtree, which passes the object, is left to the os calls it makes).
_PATH_EVENTS = (
    ("os.mkdir", ((0, 2),)), ("os.rmdir", ((0, 1),)), ("os.remove", ((0, 1),)),
    ("os.rename", ((0, 2), (1, 3))), ("os.link", ((0, 2), (1, 3))), ("os.chmod", ((0, 2),)),
    ("os.chown", ((0, 3),)), ("os.utime", ((0, 3),)), ("os.truncate", ((0, -1),)),
    ("os.setxattr", ((0, -1),)), ("os.removexattr", ((0, -1),)), ("os.chflags", ((0, -1),)),
    ("os.lchflags", ((0, -1),)), ("os.chdir", ((0, -1),)),
)
_PATH_EVENT_NAMES = frozenset(name for name, _ in _PATH_EVENTS)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_DEVICES = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr"})
# Rewriting the code or defaults of the hook's or the harness's functions would reprogram them.
_FROZEN_FUNC_ATTRS = frozenset({"__code__", "__defaults__", "__kwdefaults__"})
_CWD_FDS = (None, -1, -100)  # dir_fd values meaning "the current directory" (-100: AT_FDCWD)


def _text(obj, _type=type, _str=str, _bytes=bytes, _sjoin="".join, _bjoin=b"".join,
          _encoding=sys.getfilesystemencoding(), _Exc=Exception):
    """`obj` as the exact str a C call reads from it, or None for other objects. join copies a
    str or bytes subclass's data without calling its (possibly lying) methods."""
    kind = _type(obj)
    if kind is _str:
        return obj
    if kind is not _bytes:
        try:
            return _sjoin((obj,))
        except _Exc:
            pass
        try:
            obj = _bjoin((obj,))
        except _Exc:
            return None
    return obj.decode(_encoding, "surrogateescape")


def _resolve(text, base=None, _readlink=posix.readlink, _getcwd=posix.getcwd, _tuple=tuple,
             _len=len, _Exc=Exception):
    """The absolute path `text` names (a relative one starts at the directory `base`, else at
    the cwd: both as the kernel names them, free of symlinks), with symlinks followed as the
    kernel follows them; None for a symlink loop. (os.path.realpath would run code the program
    can monkeypatch; only tuples and str are kept in locals, which a signal handler could read
    but not change.) Components of a path relative to the cwd are looked up from the cwd, not
    from /: in a tree thousands of levels deep each lookup stays short."""
    done, rel = "", None
    if not text.startswith("/"):
        done = _getcwd() if base is None else base
        done = "" if done == "/" else done
        rel = "" if base is None else None
    rest = _tuple(text.split("/"))
    i, hops = 0, 0
    while i < _len(rest):
        name = rest[i]
        i += 1
        if name == "" or name == ".":
            continue
        if name == "..":
            done = done[:done.rfind("/")]
            rel = None if rel is None else rel + "../"
            continue
        path = done + "/" + name
        try:
            link = _readlink(path if rel is None else rel + name)
        except _Exc:  # not a symlink (or missing): a plain component
            done = path
            rel = None if rel is None else rel + name + "/"
            continue
        hops += 1
        if hops > 40:
            return None
        if link.startswith("/"):
            done, rel = "", None
        rest = _tuple(link.split("/")) + rest[i:]
        i = 0
    return done or "/"


def _fd_path(fd, _readlink=posix.readlink, _Exc=Exception):
    """The absolute path descriptor `fd` is open on; None for pipes, sockets and bad fds."""
    try:
        target = _readlink("/proc/self/fd/%d" % fd)
    except _Exc:
        return None
    return target if target.startswith("/") else None


def _dir_fds(_listdir=posix.listdir, _stat=posix.stat, _item=tuple.__getitem__, _int=int,
             _fd_path=_fd_path, _Exc=Exception):
    """Paths of the directories this process holds descriptors on (None where unknown): any of
    them could be the dir_fd of an os.open, which the `open` event does not show."""
    found = ()
    for name in _listdir("/proc/self/fd"):
        try:
            mode = _item(_stat("/proc/self/fd/" + name), 0)  # st_mode; stat_result is mutable
        except _Exc:
            continue  # closed meanwhile (listdir's own descriptor)
        if mode & 0o170000 == 0o040000:
            found += (_fd_path(_int(name)),)
    return found


def _outside(path, dir_fd, prefix, base=None, _type=type, _int=int, _tuple=tuple, _text=_text,
             _fd_path=_fd_path, _resolve=_resolve, _cwd=_CWD_FDS):
    """Whether a call changing `path` (relative to `dir_fd`, or to the directory `base`) could
    touch anything outside the directory `prefix` (ending in '/'): it leads out, it cannot be
    told where it leads, or it has a '..' other than one leading a relative path (the directory
    a '..' climbs from could be moved up, inside the work dir, between this check and the call;
    the one a relative path starts from never is the work dir's parent)."""
    if _type(path) is _int:  # a descriptor
        real = _fd_path(path)
    else:
        text = _text(path)
        if text is None:
            return True
        absolute, named, climbed = text.startswith("/"), False, False
        for name in _tuple(text.split("/")):
            if name == "..":
                if absolute or named or climbed:
                    return True
                climbed = True
            elif name != "" and name != ".":
                named = True
        if not absolute and base is None and dir_fd not in _cwd:
            base = _fd_path(dir_fd) if _type(dir_fd) is _int else None
            if base is None:
                return True
        real = _resolve(text, base)
    return real is None or not (real + "/").startswith(prefix)


def _stub(name, error):
    """A stand-in for a call that raises no audit event."""
    def refused(*args, _error=error, _message=f"{name} is not allowed in the sandbox", **kwargs):
        raise _error(_message)
    refused.__name__ = refused.__qualname__ = name
    return refused


def _remove_silent_calls():
    """Without namespaces: replace the calls that raise no audit event, everywhere they are held,
    and make sure no fresh copy of their modules can be built (_imp.create_builtin is the only
    way to rebuild a builtin module; the builtins not loaded yet are loaded first, cheaply, and
    so is _posixsubprocess, which `import subprocess` needs and may not load afresh)."""
    for name in (*sys.builtin_module_names, "_posixsubprocess"):
        if name not in sys.modules and name not in _BLOCKED_MODULES:
            try:
                __import__(name)
            except ImportError:
                pass
    stubs = {}
    for module_name, names in _SILENT_CALLS:
        module = sys.modules.get(module_name)
        for name in names:
            original = getattr(module, name, None)
            if original is not None:
                setattr(module, name, stubs.setdefault(original, _stub(name, PermissionError)))
    for supports in (os.supports_dir_fd, os.supports_fd, os.supports_follow_symlinks,
                     os.supports_effective_ids):  # sets of the functions themselves
        for original in supports.intersection(stubs):
            supports.discard(original)
            supports.add(stubs[original])
    _imp.create_builtin = _stub("create_builtin", ImportError)


def _trusted_dirs(home):
    """Directories extension modules may be loaded from ('/'-terminated): the interpreter's and
    sys.path's, except any holding the program's directory `home`. Native code from anywhere the
    program can write (its directory, /tmp, a memfd) would get past the hook."""
    dirs = set()
    for path in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path):
        if isinstance(path, str) and path.startswith("/"):
            real = _resolve(path)
            if real is not None and real != "/" and not home.startswith(real + "/"):
                dirs.add(real + "/")
    return tuple(sorted(dirs))


_PREPARED = {}


def prepare_hook(workdir=None, home=None):
    """(root, home, harness files, trusted dirs, modules to hide) for install_audit_hook:
    path lookups and walks over sys.modules (each name touched is a page a forked child
    copies), done once in the worker, which calls this before each fork, rather than in every
    child (~1 ms each). Program-made changes to those paths later do not move what the worker
    resolved first."""
    key = (os.fspath(workdir) if workdir else None, os.fspath(home) if home else None,
           len(sys.modules))
    hit = _PREPARED.get(key)
    if hit is None:
        root = _resolve(key[0]) if workdir else None
        base = root or (_resolve(key[1]) if home else None) or posix.getcwd()
        harness = frozenset(getattr(module, "__file__", None) for name, module in
                            sys.modules.items() if name.split(".")[0] == "executors") | {__file__}
        hidden = tuple(name for name in sys.modules if name.split(".")[0] == "executors"
                       or set(name.split(".")) & _BLOCKED_MODULES)
        hit = (root, base + "/", harness, _trusted_dirs(base + "/"), hidden)
        if root or home:  # (one that depends on the cwd is not kept)
            _PREPARED[key] = hit
    return hit


def install_audit_hook(workdir=None, home=None):
    """Refuse the events above for everything that runs in this process from now on (an audit
    hook cannot be removed), and make the harness modules unreachable through sys.modules.
    With `workdir` (no namespaces) also refuse processes, signals, sockets and writes outside it.
    `home`: the program's directory without a `workdir` (default: the cwd).
    """
    root, home, harness, trusted, hidden = prepare_hook(workdir, home)
    modules = _BLOCKED_MODULES | (_NO_NAMESPACE_MODULES if root is not None else frozenset())

    def hook(event, args, _blocked=_BLOCKED_EVENTS, _pre=_BLOCKED_PREFIXES, _modules=modules,
             _extra=_NO_NAMESPACE_EVENTS if root is not None else frozenset(),
             _frozen=_FROZEN_FUNC_ATTRS, _harness=harness, _function=type(_text),
             _path_names=_PATH_EVENT_NAMES, _paths=_PATH_EVENTS,
             _prefix=None if root is None else root + "/", _home=home,
             _trusted=trusted, _wflags=_WRITE_FLAGS, _devices=_DEVICES,
             _text=_text, _resolve=_resolve, _outside=_outside, _dir_fds=_dir_fds,
             _getpid=posix.getpid, _type=type, _str=str, _int=int, _len=len, _tuple=tuple,
             _RuntimeError=RuntimeError, _ImportError=ImportError,
             _PermissionError=PermissionError):
        if _type(event) is not _str:
            return  # C always passes a str: a program's own sys.audit call, nothing to guard
        if event in _blocked or event in _extra or event.startswith(_pre):
            raise _RuntimeError(event + " is not allowed in the sandbox")
        if event == "import" and _len(args) > 1:
            name = _text(args[0])
            if name is None:
                raise _ImportError("module name is not a str")
            for part in _tuple(name.split(".")):
                if part in _modules:
                    raise _ImportError("module " + name + " is not available in the sandbox")
            if args[1] is not None:  # an extension module (native code) from this file
                origin = _text(args[1])
                real = None if origin is None else _resolve(origin)
                if (real is None or real[real.rfind("/") + 1:].split(".")[0] in _modules
                        or not (real + "/").startswith(_trusted) or (real + "/").startswith(_home)):
                    raise _ImportError("extension module " + name + " may not be loaded from "
                                       + (origin or "there") + " in the sandbox")
            return
        if (event == "object.__setattr__" and _len(args) > 1 and _type(args[0]) is _function
                and _type(args[1]) is _str and args[1] in _frozen
                and args[0].__code__.co_filename in _harness):  # (namedtuple sets __defaults__)
            raise _RuntimeError("setting " + args[1] + " is not allowed in the sandbox")
        if _prefix is None:
            return
        if event == "open" and _len(args) >= 3:
            path, mode, flags = args[0], args[1], args[2]
            writes = (_type(mode) is _str and ("w" in mode or "a" in mode or "x" in mode
                                               or "+" in mode)) or (
                _type(flags) is _int and flags & _wflags)
            if not writes or _type(path) is _int:  # reading, or an already open descriptor
                return
            text = _text(path)
            if text in _devices:
                return
            refused = _outside(path, -1, _prefix)
            if not refused and mode is None and not text.startswith("/"):
                # os.open: the event does not say whether a dir_fd was given; any would do
                for base in _dir_fds():
                    if base is None or _outside(text, -1, _prefix, base):
                        refused = True
            if refused:
                raise _PermissionError("writing " + (text or "that path")
                                       + " is not allowed in the sandbox")
        elif event in _path_names:
            for name, positions in _paths:
                if name == event:
                    for at, dir_at in positions:
                        dir_fd = args[dir_at] if 0 <= dir_at < _len(args) else -1
                        if at < _len(args) and _outside(args[at], dir_fd, _prefix):
                            raise _PermissionError(event + " outside the work dir is not "
                                                   "allowed in the sandbox")
        elif event == "resource.prlimit" and _len(args) > 2 and args[2] is not None:
            if args[0] != 0 and args[0] != _getpid():
                raise _PermissionError("prlimit on another process is not allowed in the sandbox")

    for name in hidden:
        del sys.modules[name]  # an `import executors.child` now loads a separate copy
    if root is not None:
        _remove_silent_calls()
    sys.addaudithook(hook)
