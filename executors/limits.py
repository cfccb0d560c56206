"""Resource limits for one program run, and applying them as rlimits in the child.

Stdlib only: this module is imported inside the sandbox.
"""
import dataclasses
import math
import resource


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-program limits. Wall-clock deadlines are enforced by the worker; the rest by rlimits."""

    per_test_timeout: float = 3.0      # seconds of wall time for one test (and for loading the code)
    program_timeout: float = 60.0      # cap on one program's wall time, all tests and restarts
    memory_mb: int = 2048              # address space per process
    file_size_mb: int = 16             # largest file a program may write (also captured stdout)
    max_open_files: int = 256
    max_processes: int = 64            # per sandbox user; bounds fork bombs
    max_output_bytes: int = 1 << 20    # stdout kept for stdio tests; beyond it the test fails
    max_value_chars: int = 16 << 20    # size cap of a returned value

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


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
