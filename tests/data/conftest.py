"""Fixtures for benchmark tests: the offline benchmark copies and a shared execution pool."""
from pathlib import Path

import pytest

from executors import ExecutionPool

# CI clones the repo next to `shared/`; resolve it from this file, never from the cwd.
SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "mbpp.jsonl").exists():
        pytest.skip(f"offline benchmark copies not found in {SHARED_DATA.resolve()}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def pool():
    # Generous per-test limit: MBPP task 123's reference needs ~6 s on a loaded machine.
    with ExecutionPool(workers=2, per_test_timeout=30.0, cache_size=0,
                       allow_unsandboxed=True) as p:
        yield p
