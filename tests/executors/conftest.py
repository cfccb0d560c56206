"""Shared pools for the executor tests: one bubblewrap-sandboxed, one without namespaces."""
import warnings

import pytest

from executor_helpers import POOL_KW
from executors import ExecutionPool, SandboxUnavailable


@pytest.fixture(scope="session")
def bwrap_pool():
    try:
        pool = ExecutionPool(sandbox="bwrap", **POOL_KW)
    except SandboxUnavailable as e:
        pytest.skip(f"bubblewrap cannot create namespaces here: {e}")
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def plain_pool():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        pool = ExecutionPool(sandbox="none", allow_unsandboxed=True, **POOL_KW)
    yield pool
    pool.close()


@pytest.fixture(params=["bwrap", "none"])
def any_pool(request):
    """Each test that is safe without namespaces runs in both modes."""
    return request.getfixturevalue("bwrap_pool" if request.param == "bwrap" else "plain_pool")
