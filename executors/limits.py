"""Resource limits for one program run, and applying them as rlimits in the child.

Stdlib only: this module is imported inside the sandbox.
"""
import collections
import math
import resource

_FIELDS = (
    ("per_test_timeout", 3.0),     # seconds of wall time for one test
    ("load_timeout", 10.0),        # seconds to run the program's top level (imports, definitions)
    ("program_timeout", 60.0),     # cap on one program's wall time, all tests and restarts
    ("memory_mb", 2048),           # address space per process; with cgroups, also the whole
                                   # sandbox's memory (plus the worker's own share)
    ("file_size_mb", 16),          # largest file a program may write (also captured stdout)
    ("max_open_files", 256),
    ("max_processes", 128),        # processes and threads per sandbox user (and, with cgroups,
                                   # in the whole sandbox); bounds fork bombs
    ("max_output_bytes", 1 << 20),  # stdout kept for stdio tests; beyond it the test fails
    ("max_value_chars", 16 << 20),  # size cap of a returned value
)


class Limits(collections.namedtuple("Limits", [name for name, _ in _FIELDS],
                                    defaults=[default for _, default in _FIELDS])):
    """Per-program limits. Wall-clock deadlines are enforced by the worker; the rest by rlimits,
    and memory/processes also by the pool's cgroup per sandbox (see `executors.cgroups`).

    (A namedtuple rather than a dataclass: the sandboxed worker should not import `inspect`.)
    """

    __slots__ = ()

    def to_dict(self):
        return dict(self._asdict())

    @classmethod
    def from_dict(cls, d):
        return cls(**{name: d[name] for name in cls._fields if name in d})


def apply_rlimits(limits, cpu_seconds):
    """Set rlimits on the calling process (inherited by everything it starts)."""
    mb = 1024 * 1024
    cpu = max(1, int(math.ceil(cpu_seconds)))
    for res, value in (
        (resource.RLIMIT_AS, limits.memory_mb * mb),
        (resource.RLIMIT_DATA, limits.memory_mb * mb),
        (resource.RLIMIT_FSIZE, limits.file_size_mb * mb),
        (resource.RLIMIT_NOFILE, limits.max_open_files),
        (resource.RLIMIT_NPROC, limits.max_processes),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_MEMLOCK, 0),
        (resource.RLIMIT_MSGQUEUE, 0),
    ):
        soft, hard = value if isinstance(value, tuple) else (value, value)
        _, cur_hard = resource.getrlimit(res)
        if cur_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, cur_hard), min(hard, cur_hard)
        resource.setrlimit(res, (soft, hard))
