"""Sandboxed execution pool: runs untrusted, model-written Python against tests.

    from executors import ExecutionPool, Program, TestCase
    with ExecutionPool(workers=2, per_test_timeout=3.0) as pool:
        [result] = pool.run([Program("p0", "def f(x):\n    return x + 1\n",
                                     [TestCase.assertion("assert f(1) == 2")])])

Imports only the standard library (never JAX or numpy): workers are fresh interpreters.
"""
from executors.limits import Limits
from executors.pool import ExecutionPool
from executors.sandbox import SandboxUnavailable
from executors.testcase import ExecutionResult, Program, TestCase, TestResult

__all__ = ["ExecutionPool", "ExecutionResult", "Limits", "Program", "SandboxUnavailable",
           "TestCase", "TestResult"]
