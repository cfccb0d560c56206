"""Shared by the collection tests."""
import signal
import time
from pathlib import Path

OUTPUTS = ("sft.jsonl", "rl.jsonl", "stats.json")


def outputs(workdir):
    """The export's files, as bytes (they must match byte for byte across runs)."""
    return {name: (Path(workdir) / name).read_bytes() for name in OUTPUTS}


def kill_once_written(proc, part: Path, timeout: float) -> None:
    """SIGKILLs `proc` as soon as `part` has data (a stage has saved its first chunk)."""
    deadline = time.time() + timeout
    try:
        while not (part.exists() and part.stat().st_size > 0):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
