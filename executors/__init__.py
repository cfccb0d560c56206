"""Sandboxed execution pool: runs untrusted, model-written Python against tests.

    from executors import ExecutionPool, Program, TestCase
    with ExecutionPool(workers=2, per_test_timeout=3.0) as pool:
        [result] = pool.run([Program("p0", "def f(x):\n    return x + 1\n",
                                     [TestCase.assertion("assert f(1) == 2")])])

Imports only the standard library (never JAX or numpy). The names below load lazily, so the
sandboxed worker (`python -m executors.worker`) stays small: it imports none of the pool code.
"""
import importlib

_EXPORTS = {
    "ExecutionPool": "executors.pool",
    "ExecutionResult": "executors.testcase",
    "Limits": "executors.limits",
    "Program": "executors.testcase",
    "SandboxUnavailable": "executors.sandbox",
    "TestCase": "executors.testcase",
    "TestResult": "executors.testcase",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'executors' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
