"""Killing a subprocess at a chosen moment, for the resume-after-SIGKILL tests."""
import signal
import time
from pathlib import Path
from typing import Callable


def kill_when(proc, ready: Callable[[], bool], timeout: float) -> None:
    """SIGKILLs `proc` as soon as `ready()` holds; fails if it exits or `timeout` s pass first."""
    deadline = time.time() + timeout
    try:
        while not ready():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def kill_once_written(proc, part: Path, timeout: float) -> None:
    """SIGKILLs `proc` as soon as `part` has data (a stage has saved its first chunk)."""
    kill_when(proc, lambda: part.exists() and part.stat().st_size > 0, timeout)
