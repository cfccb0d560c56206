"""A small execution pool shared by the evaluation tests."""
import pytest

from executors import ExecutionPool


@pytest.fixture(scope="session")
def pool():
    with ExecutionPool(workers=2, cache_size=0, allow_unsandboxed=True) as p:
        yield p
