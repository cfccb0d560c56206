"""The training problems LeDex collects on, and how each is shown to a model.

Datasets (LEDEX.md §1): ``mbpp`` (train split, task_id 601-974), ``apps`` (train),
``codecontests`` (train) and ``demo`` (the bundled problems of
``ledex_jax/data/demo/sft_demo_problems.jsonl``). Every problem gets a ``source`` key
(``demo/000_sum_of_squares``, ``mbpp/601``, ``apps/17``) that names it in every record, and
the text a model sees (``shown_text``): the statement with the example test (MBPP style) or
the starter code (APPS).
"""
from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path

from executors import TestCase
from ledex_jax.data.benchmarks import Problem, load_apps, load_codecontests, load_mbpp
from ledex_jax.data.benchmarks.problem import BenchmarkDataError

DATASETS = ("demo", "mbpp", "apps", "codecontests")
MBPP_SHOT_IDS = (2, 3, 4)  # the paper's 3-shot MBPP examples (prompt split)


@dataclasses.dataclass(frozen=True)
class TrainingProblem:
    """A problem with the key that names it in every collected record."""

    source: str   # e.g. "mbpp/601"
    dataset: str
    text: str     # what the model is shown (the SFT record's ``problem`` field)
    problem: Problem


def demo_problems_path() -> Path:
    return Path(str(resources.files("ledex_jax") / "data" / "demo" / "sft_demo_problems.jsonl"))


def load_demo(path: str | Path | None = None) -> list[TrainingProblem]:
    """The bundled demo problems (or a file in their format: source, entry_point, problem, tests)."""
    path = Path(path) if path else demo_problems_path()
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        rec = json.loads(line)
        missing = [f for f in ("source", "entry_point", "problem", "tests") if f not in rec]
        if missing:
            raise BenchmarkDataError(f"{path} line {lineno}: missing {', '.join(missing)}")
        tests = tuple(TestCase.assertion(t, rec["entry_point"]) for t in rec["tests"])
        problem = Problem(task_id=rec["source"], benchmark="demo", prompt=rec["problem"], tests=tests,
                          entry_point=rec["entry_point"], split="train", examples=tests[:1])
        out.append(TrainingProblem(rec["source"], "demo", rec["problem"], problem))
    return out


def shown_text(problem: Problem) -> str:
    """The statement as a model sees it: MBPP-style problems with their example test, APPS and
    CodeContests with their starter code."""
    text = problem.prompt.strip()
    if problem.examples and problem.benchmark.startswith("mbpp"):
        return f"{text}\nYour code should pass this test:\n{problem.examples[0]}"
    if problem.starter_code.strip():
        return f"{text}\n\nUse this starter code:\n```python\n{problem.starter_code.rstrip()}\n```"
    return text


def _source(dataset: str, problem: Problem) -> str:
    tid = problem.task_id
    if dataset == "mbpp":
        return f"mbpp/{tid.split('/', 1)[1]}"
    return f"{dataset}/{tid}"


def load_dataset(name: str, path: str = "", max_problems: int = -1) -> list[TrainingProblem]:
    """The training problems of one dataset, in the loader's order, the first ``max_problems``."""
    if name not in DATASETS:
        raise BenchmarkDataError(f"unknown dataset {name!r} in config.data.datasets; use {DATASETS}")
    if name == "demo":
        problems = load_demo(path or None)
    else:
        if name == "mbpp":
            if not path:
                raise BenchmarkDataError("dataset 'mbpp' needs config.data.mbpp_path (the mbpp.jsonl file)")
            raw = load_mbpp(path, split="train")
        elif name == "apps":
            raw = load_apps(path or None, split="train")
        else:
            raw = load_codecontests(path or None, split="train")
        problems = [TrainingProblem(_source(name, p), name, shown_text(p), p) for p in raw]
    return problems if max_problems < 0 else problems[:max_problems]


def few_shot_records(name: str, path: str = "", k: int = 3) -> list[dict[str, str]]:
    """``k`` worked examples (problem text + reference code) for ``name``'s code-generation
    prompt: MBPP uses task ids 2-4 as the paper does; the other datasets have none."""
    if k <= 0 or name != "mbpp":  # the other datasets are prompted zero-shot
        return []
    if k > len(MBPP_SHOT_IDS):
        raise BenchmarkDataError(f"config.data.few_shot={k}: at most {len(MBPP_SHOT_IDS)} MBPP examples")
    by_id = {p.task_id: p for p in load_mbpp(path, split="prompt")}
    shots = []
    for tid in MBPP_SHOT_IDS[:k]:
        p = by_id[f"Mbpp/{tid}"]
        shots.append({"problem": shown_text(p), "refined_code": p.reference})
    return shots
