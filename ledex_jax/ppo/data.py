"""PPO's training rows: one wrong solution each, with what its responses are judged against.

Two sources (`config.data.source`):
- "collected": a collection's `rl.jsonl` (scripts/collect.py) or its directory. The problem's
  tests are reloaded from the dataset the row names (`data.{demo,mbpp,apps,codecontests}_path`).
- "demo_sft": the bundled demo SFT set (or any SFT JSONL with `data.sft_path`), grouped by wrong
  code: its refinements and explanations are the references.

References (LEDEX.md §3): the verified refinements give S_cb, their explanations S_ex. A row with
no verified refinement falls back to the dataset's reference solution for S_cb (and gets no
explanation reward); a row with no reference of any kind is skipped and counted in
`<workdir>/rl_data_report.json`, never scored 0.

The order is a function of (seed, step) only: global row i of step s is draw s*B + i of an
endless sequence of seeded epoch permutations, so a resumed run sees the same batches.
"""
from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path

import numpy as np

from ledex_jax.collect import problems as problem_sources
from ledex_jax.data.benchmarks.problem import BenchmarkDataError, Problem
from ledex_jax.ppo.scoring import ScoringTarget

SOURCES = ("collected", "demo_sft")


class RLDataError(ValueError):
    """An RL data file that cannot be trained on; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class RLRow:
    id: str
    source: str                 # the problem's key, e.g. "mbpp/601"
    problem: str                # the statement as the model is shown it
    wrong_code: str
    feedback: str               # execution feedback on the wrong code
    target: ScoringTarget       # tests and references for the rewards
    trajectories: tuple[dict, ...] = ()  # collected teacher answers {code, explanation}: the `offline` responses

    def prompt_fields(self) -> dict[str, str]:
        """What `ledex_jax.data.prompts` reads to build the refine / explain_refine prompt."""
        return {"problem": self.problem, "wrong_code": self.wrong_code, "feedback": self.feedback}


@dataclasses.dataclass
class DataReport:
    rows: int = 0
    skipped: dict[str, list[str]] = dataclasses.field(default_factory=lambda: collections.defaultdict(list))
    reference_fallback: int = 0  # rows judged against the dataset's reference solution

    def skip(self, why: str, row_id: str) -> None:
        self.skipped[why].append(row_id)

    def to_json(self) -> dict:
        return {"rows": self.rows, "reference_fallback": self.reference_fallback,
                "skipped": {why: {"count": len(ids), "ids": ids[:50]} for why, ids in self.skipped.items()}}

    def summary(self) -> str:
        skipped = ", ".join(f"{len(ids)} {why}" for why, ids in self.skipped.items()) or "none"
        return f"{self.rows} RL rows ({self.reference_fallback} judged against the dataset's reference); skipped: {skipped}"


def load_rows(data_cfg, report: DataReport) -> list[RLRow]:
    if data_cfg.source == "demo_sft":
        rows = _from_sft(data_cfg, report)
    elif data_cfg.source == "collected":
        rows = _from_collection(data_cfg, report)
    else:
        raise RLDataError(f"config.data.source={data_cfg.source!r}; choose one of {', '.join(SOURCES)}")
    report.rows = len(rows)
    if not rows:
        raise RLDataError(f"no trainable RL rows: {report.summary()}. Every row needs a verified refinement or "
                          "a dataset reference solution, and tests; see rl_data_report.json in the workdir")
    return rows


def _target(problem: Problem, wrong_code: str, codes, explanations, fallback: str, row_id: str,
            report: DataReport) -> ScoringTarget | None:
    codes = tuple(c for c in codes if c and c.strip())
    explanations = tuple(e for e in explanations if e and e.strip())
    if not codes and fallback.strip():
        codes, explanations = (fallback,), ()
        report.reference_fallback += 1
    if not codes:
        report.skip("without any reference solution", row_id)
        return None
    if not problem.tests:
        report.skip("without tests", row_id)
        return None
    return ScoringTarget(problem=problem, wrong_code=wrong_code, reference_codes=codes,
                         reference_explanations=explanations)


def _from_sft(data_cfg, report: DataReport) -> list[RLRow]:
    from ledex_jax.data.records import read_sft_jsonl

    path = data_cfg.sft_path or str(Path(problem_sources.demo_problems_path()).with_name("sft_demo.jsonl"))
    problems = {p.source: p for p in problem_sources.load_demo(data_cfg.demo_path or None)}
    groups: dict[tuple[str, str], list] = collections.defaultdict(list)
    references: dict[str, str] = {}
    for rec in read_sft_jsonl(path):
        if rec.format == "codegen":
            references.setdefault(rec.source, rec.refined_code)
        else:
            groups[(rec.source, rec.wrong_code)].append(rec)
    rows = []
    for i, ((source, wrong), recs) in enumerate(groups.items()):
        row_id = f"{source}/w{i:04d}"
        if source not in problems:
            report.skip("whose problem has no tests in data.demo_path", row_id)
            continue
        codes = list(dict.fromkeys(r.refined_code for r in recs))
        explanations = list(dict.fromkeys(r.explanation for r in recs if r.format == "explain_refine"))
        target = _target(problems[source].problem, wrong, codes, explanations, references.get(source, ""), row_id,
                         report)
        if target is not None:
            trajectories = tuple({"code": r.refined_code, "explanation": r.explanation}
                                 for r in recs if r.format == "explain_refine")
            rows.append(RLRow(row_id, source, recs[0].problem, wrong, recs[0].feedback, target, trajectories))
    return rows


def _collection_file(path: str) -> Path:
    if not path:
        raise RLDataError("config.data.rl_path is empty: give a collection directory or its rl.jsonl "
                          "(python scripts/collect.py --config=configs/collect.py --workdir=DIR), or set "
                          "config.data.source='demo_sft'")
    p = Path(path).expanduser()
    p = p / "rl.jsonl" if p.is_dir() else p
    if not p.is_file():
        raise RLDataError(f"RL data file {p} does not exist; run the collection's export stage first")
    return p


def _from_collection(data_cfg, report: DataReport) -> list[RLRow]:
    path = _collection_file(data_cfg.rl_path)
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise RLDataError(f"{path} line {lineno} is not JSON ({e})") from e
        missing = [f for f in ("id", "dataset", "task_id", "problem", "wrong_code", "feedback") if f not in rec]
        if missing:
            raise RLDataError(f"{path} line {lineno}: missing {', '.join(missing)}; is this a collection's rl.jsonl?")
        records.append(rec)
    by_dataset = {}
    for name in sorted({r["dataset"] for r in records}):
        dataset_path = data_cfg.get(f"{name}_path", "")
        try:
            by_dataset[name] = {p.problem.task_id: p for p in problem_sources.load_dataset(name, dataset_path)}
        except BenchmarkDataError as e:
            raise RLDataError(f"{path} has rows of dataset {name!r} whose tests cannot be loaded: {e} "
                              f"(set config.data.{name}_path)") from e
    rows = []
    for rec in records:
        problem = by_dataset[rec["dataset"]].get(rec["task_id"])
        if problem is None:
            report.skip("whose task is not in its dataset", rec["id"])
            continue
        fixes = rec.get("refinements", [])
        target = _target(problem.problem, rec["wrong_code"], [f["code"] for f in fixes],
                         [f.get("explanation", "") for f in fixes], rec.get("reference", ""), rec["id"], report)
        if target is not None:
            trajectories = tuple({"code": t["code"], "explanation": t.get("explanation", "")}
                                 for t in fixes + rec.get("failed", []) if t.get("code"))
            rows.append(RLRow(rec["id"], rec.get("source", ""), rec["problem"], rec["wrong_code"], rec["feedback"],
                              target, trajectories))
    return rows


def batch_indices(num_rows: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """The row indices of global batch `step`: draws step*B .. step*B + B - 1 of the endless
    sequence of epoch permutations seeded by (seed, epoch)."""
    draws = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs = draws // num_rows
    out = np.empty(batch_size, np.int64)
    for epoch in np.unique(epochs):
        perm = np.random.default_rng([seed, int(epoch)]).permutation(num_rows)
        sel = epochs == epoch
        out[sel] = perm[draws[sel] % num_rows]
    return out
