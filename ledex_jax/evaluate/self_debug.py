"""Self-debug evaluation (LeDex §4, LEDEX.md §4): initial samples, then rounds of refinement.

    round 0   n samples per task at the temperature, each run in the execution pool
    round r   for each method (refine, explain_refine; independent chains from the same initial
              samples), every sample whose code after round r-1 of that method still fails gets
              one answer to that method's prompt: the problem, its own wrong code and the
              execution feedback. The answer's code replaces the sample's code; an answer
              without code leaves the sample as it was (still wrong). Passing samples are never
              asked about again.

The feedback a prompt shows comes from the problem's "base" suite only; the verdict from all
suites (MBPP+/HumanEval+: base and plus, as EvalPlus judges). A sample that passes the base
suite and fails another gets `PASSES_BASE_FEEDBACK`, which names no hidden test.

Work lives in ``DIR/records/<benchmark>/`` (``collect.store``: keyed JSONL stages, one write and
an fsync per chunk, torn last lines dropped) beside a manifest that refuses another config. A
chunk is ``problems_per_chunk`` problems of one round; one whose verdicts are all saved is
skipped, a partial one asks only for its missing answers. Every request is seeded from its key
(``key_seed``), so a resumed run gives the answers an uninterrupted one would. Keys:
``<task_id>/s003/init`` (sample 3) and ``<task_id>/s003/<method>/r1`` (its round-1 answer).
Execution of a chunk overlaps the model answering the next.

Outputs, all functions of the records (rewritten by every run in the same workdir):
    DIR/samples/<benchmark>/round0.jsonl, <method>_round<r>.jsonl   EvalPlus format
    DIR/per_sample.jsonl    one line per answer executed or refused: verdict, suites, feedback
    DIR/results.json        per round pass@k, counts and success rate; overall; throughput
"""
from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from executors import feedback as feedback_text
from ledex_jax.collect import store
from ledex_jax.collect.pipeline import extract_code
from ledex_jax.collect.problems import shown_text
from ledex_jax.collect.teacher_api import TeacherRequest, TeacherUnavailable, key_seed
from ledex_jax.data import prompts
from ledex_jax.data.benchmarks.problem import Problem
from ledex_jax.evaluate.functional import program_for, status_counts, suite_verdicts
from ledex_jax.evaluate.round_metrics import chain_numbers, overall

METHODS = ("refine", "explain_refine")
INIT = "init"
RESULTS_VERSION = 1
FEEDBACK_SUITE = "base"
PASSES_BASE_FEEDBACK = ("The code above passes the given tests, but it is still wrong on other "
                        "inputs.")
VERDICT_FIELDS = ("code_found", "passed", "suites", "fraction_passed", "statuses", "feedback", "error")
DEMO_SFT = Path(__file__).resolve().parent.parent / "data" / "demo" / "sft_demo.jsonl"


class SelfDebugError(RuntimeError):
    """An evaluation that cannot go on as asked; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to sample and how to refine (defaults: the paper's, LEDEX.md §4)."""

    n: int = 100                       # initial samples per task
    temperature: float = 0.8           # initial sampling (0 = greedy)
    top_p: float = 0.95
    max_new_tokens: int = 512          # per answer, initial and refinement
    ks: tuple[int, ...] = (1, 10)      # pass@k; every k <= n
    rounds: int = 3                    # refinement rounds per method
    methods: tuple[str, ...] = METHODS
    few_shot: int = 0                  # complete examples of the prompt's format before each request
    refine_temperature: float | None = None  # None: as `temperature`; 0: greedy (paper Table 10)
    limit: int | None = None           # the first N problems of each benchmark
    style: str = "chat_template"       # how a local model sees the chat: chat_template | starchat
    seed: int = 0
    max_prompt_len: int = 2048         # a longer prompt gets no answer (counted as no code)
    problems_per_chunk: int = 8        # unit of work and of resuming

    def __post_init__(self):
        object.__setattr__(self, "ks", tuple(self.ks))
        object.__setattr__(self, "methods", tuple(self.methods) if self.rounds else ())  # no rounds: no chains
        for name, ok, fix in (
                ("n", self.n >= 1, "use 1 or more samples per task"),
                ("temperature", self.temperature >= 0, "use 0 (greedy) or more"),
                ("top_p", 0 < self.top_p <= 1, "use a value in (0, 1]"),
                ("max_new_tokens", self.max_new_tokens >= 1, "use 1 or more"),
                ("rounds", self.rounds >= 0, "use 0 or more"),
                ("few_shot", self.few_shot >= 0, "use 0 or more examples"),
                ("refine_temperature", self.refine_temperature is None or self.refine_temperature >= 0,
                 "use 0 (greedy) or more"),
                ("limit", self.limit is None or self.limit >= 1, "use 1 or more problems, or no limit"),
                ("max_prompt_len", self.max_prompt_len >= 1, "use 1 or more tokens"),
                ("problems_per_chunk", self.problems_per_chunk >= 1, "use 1 or more")):
            if not ok:
                raise SelfDebugError(f"{name}={getattr(self, name)!r}: {fix}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or len(set(self.methods)) != len(self.methods):
            raise SelfDebugError(f"methods={self.methods!r}: use each of {', '.join(METHODS)} at most once")
        if self.style not in prompts.STYLES:
            raise SelfDebugError(f"style={self.style!r}: use one of {', '.join(prompts.STYLES)}")
        if not self.ks or any(int(k) != k or k < 1 for k in self.ks):
            raise SelfDebugError(f"ks={self.ks!r}: use positive integers such as (1, 10)")
        too_big = [k for k in self.ks if k > self.n]
        if too_big:
            raise SelfDebugError(f"pass@{max(too_big)} needs at least {max(too_big)} samples per task, "
                                 f"but n={self.n}; sample more (n >= {max(too_big)}) or drop k={too_big}")

    @property
    def refinement_temperature(self) -> float:
        return self.temperature if self.refine_temperature is None else self.refine_temperature

    def reported(self) -> dict:
        """The settings as results.json records them."""
        return {"n": self.n, "temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens, "ks": list(self.ks), "rounds": self.rounds,
                "methods": list(self.methods), "few_shot": self.few_shot,
                "refine_temperature": self.refinement_temperature, "limit": self.limit,
                "style": self.style}

    def decisive(self) -> dict:
        """What decides the answers (the manifest): rounds, methods, limit, ks and chunking only
        add or select keyed work, so a rerun may change them and keeps what is saved."""
        return {"n": self.n, "temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens, "few_shot": self.few_shot,
                "refine_temperature": self.refinement_temperature, "style": self.style,
                "seed": self.seed, "max_prompt_len": self.max_prompt_len}


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """Problems to evaluate on; ``source`` names where they came from (file, split) so a
    workdir refuses the same benchmark read from other data."""

    name: str
    problems: tuple[Problem, ...]
    source: str = ""

    def __post_init__(self):
        object.__setattr__(self, "problems", tuple(self.problems))
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", self.name):
            raise SelfDebugError(f"benchmark name {self.name!r} must be a plain name (letters, digits, _.+-)")
        if not self.problems:
            raise SelfDebugError(f"benchmark {self.name} has no problems")
        ids = [p.task_id for p in self.problems]
        if len(set(ids)) != len(ids):
            raise SelfDebugError(f"benchmark {self.name}: task ids repeat; every problem needs its own")


class Latest(NamedTuple):
    """A sample after some round of a chain: its code, verdict and the feedback on it."""

    code: str
    passed: bool
    feedback: str


@dataclasses.dataclass(frozen=True)
class Item:
    """One answer to get and judge: sample ``j`` of problem ``i`` at round ``round``."""

    key: str
    i: int
    j: int
    method: str            # INIT or a refinement method
    round: int
    before: Latest | None  # the sample as the refinement prompt shows it (None at round 0)


def sample_key(task_id: str, j: int) -> str:
    return f"{task_id}/s{j:03d}"


def answer_key(task_id: str, j: int, method: str = INIT, round_index: int = 0) -> str:
    """The key of sample ``j``'s initial answer (``method=INIT``) or of its refinement."""
    base = sample_key(task_id, j)
    return f"{base}/{INIT}" if method == INIT else f"{base}/{method}/r{round_index}"


def base_feedback(problem: Problem, result) -> str:
    """Feedback from the problem's base suite only (the verdict may use more suites)."""
    start, stop = problem.suites.get(FEEDBACK_SUITE, next(iter(problem.suites.values())))
    kinds = [t.kind for t in problem.tests[start:stop]]
    text = feedback_text.feedback(result.tests[start:stop], kinds)
    if text:
        return text
    if result.error:
        return f"The code above could not be run: {result.error}"
    if len(result.tests) < stop:  # the run stopped before the base tests
        return "The code above did not finish its tests."
    return PASSES_BASE_FEEDBACK


def prompt_format(method: str) -> str:
    """The prompts.messages format of a chain's requests (initial samples: code generation)."""
    return "codegen" if method == INIT else method


def demo_shots(fmt: str, k: int) -> list:
    """The first ``k`` complete examples of format ``fmt`` in the bundled demo SFT set."""
    if k <= 0:
        return []
    from ledex_jax.data.records import read_sft_jsonl

    shots = [r for r in read_sft_jsonl(DEMO_SFT) if r.format == fmt]
    if k > len(shots):
        raise SelfDebugError(f"few_shot={k}: the demo set {DEMO_SFT} has {len(shots)} {fmt} examples; "
                             f"use at most {len(shots)}")
    return shots[:k]


def check_workdir(workdir: Path) -> None:
    """Refuses a folder with files of something else in it (nothing a user made is overwritten)."""
    if workdir.exists() and not workdir.is_dir():
        raise SelfDebugError(f"--workdir {workdir} is a file; name a folder")
    if workdir.is_dir() and any(workdir.iterdir()) and not (workdir / "records").is_dir():
        raise SelfDebugError(f"--workdir {workdir} already holds files that are not an evaluation "
                             "(no records/ folder); name a new or empty folder")


def manifest_difference(folder: Path, config: dict) -> str | None:
    """None when ``folder`` is new or was made with ``config``; else the fields that differ."""
    path = folder / store.MANIFEST
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    if old.get("hash") == store.config_hash(config):
        return None
    was = old.get("config", {})
    return "; ".join(f"{k}: {was.get(k, '<absent>')!r} -> {config.get(k, '<absent>')!r}"
                     for k in sorted(set(was) | set(config)) if was.get(k) != config.get(k)
                     ) or f"{path} was written for another config"


def write_manifest(folder: Path, config: dict) -> None:
    path = folder / store.MANIFEST
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        store.write_atomic(path, json.dumps({"hash": store.config_hash(config), "config": config},
                                            indent=1, sort_keys=True).encode())


class Throughput:
    """Seconds and work of this invocation, per stage."""

    def __init__(self):
        self.seconds = {"generate": 0.0, "execute": 0.0}
        self.answers = self.tokens = 0

    def timed(self, stage: str, fn: Callable, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds[stage] += time.perf_counter() - start

    def report(self, total: float, extra: dict[str, float]) -> dict:
        out: dict[str, Any] = {"seconds": round(total, 3),
                               "samples_per_s": round(self.answers / total, 4) if total > 0 else None}
        if self.tokens and self.seconds["generate"] > 0:
            out["generated_tokens_per_s"] = round(self.tokens / self.seconds["generate"], 2)
        out["answers"] = self.answers
        out["stage_seconds"] = {k: round(v, 3) for k, v in {**extra, **self.seconds}.items()}
        return out


class BenchmarkRun:
    """One benchmark's initial samples and refinement chains, kept in DIR/records/<name>/."""

    def __init__(self, bench: Benchmark, settings: Settings, workdir: Path, model_spec: str):
        self.name, self.settings = bench.name, settings
        self.problems = bench.problems[:settings.limit] if settings.limit else bench.problems
        self.texts = [shown_text(p) for p in self.problems]
        self.dir = workdir / "records" / bench.name
        self.manifest = {"benchmark": bench.name, "source": bench.source, "model": model_spec,
                         **settings.decisive()}
        size = settings.problems_per_chunk
        self.chunks = [range(c, min(c + size, len(self.problems)))
                       for c in range(0, len(self.problems), size)]
        self.answers: dict[str, dict] = {}
        self.verdicts: dict[str, dict] = {}
        self.states: dict[str, list[list[list[Latest]]]] = {}  # method -> round -> problem -> sample
        self.shots = {m: demo_shots(prompt_format(m), settings.few_shot) for m in (INIT, *settings.methods)}

    # --- orchestration -------------------------------------------------------------------
    def check(self, workdir: Path) -> None:
        """Refuses a workdir whose records of this benchmark were made with other settings."""
        diff = manifest_difference(self.dir, self.manifest)
        if diff:
            raise SelfDebugError(f"{workdir} holds an evaluation of {self.name} made with other settings "
                                 f"({diff}); rerun with the same settings to resume, or pass a new --workdir")

    def run(self, model, pool, clock: Throughput, progress: bool) -> None:
        write_manifest(self.dir, self.manifest)
        self.answers = store.read_stage(self.dir, "answers")
        self.verdicts = store.read_stage(self.dir, "verdicts")
        self._step(0, model, pool, clock, progress)
        initial = [[self._initial(i, j) for j in range(self.settings.n)] for i in range(len(self.problems))]
        self.states = {m: [initial] for m in (INIT, *self.settings.methods)}
        for r in range(1, self.settings.rounds + 1):
            if not self.settings.methods:
                break
            self._step(r, model, pool, clock, progress)
            for m in self.settings.methods:
                self.states[m].append([[self._advance(m, r, i, j, s) for j, s in enumerate(row)]
                                       for i, row in enumerate(self.states[m][r - 1])])

    def _step(self, r: int, model, pool, clock: Throughput, progress: bool) -> None:
        from tqdm.auto import tqdm

        items = {chunk.start: self._items(r, chunk) for chunk in self.chunks}
        what = "samples" if r == 0 else "refinements"
        bar = tqdm(total=sum(map(len, items.values())), desc=f"{self.name} round {r}", unit=what,
                   disable=not progress)
        pending: list[tuple[list[Item], dict]] = []
        last = self.chunks[-1]
        try:
            for chunk in self.chunks:
                todo = [it for it in items[chunk.start] if it.key not in self.verdicts]
                bar.update(len(items[chunk.start]) - len(todo))
                if todo:
                    self._answer(todo, model, clock)
                    pending.append((todo, self._submit(todo, pool)))
                while len(pending) > (1 if chunk is not last else 0):
                    # the pool runs one chunk while the model answers the next
                    done, futures = pending.pop(0)
                    self._collect(done, futures, clock)
                    bar.update(len(done))
        finally:
            bar.close()

    # --- items and prompts -----------------------------------------------------------------
    def _items(self, r: int, chunk: range) -> list[Item]:
        n = self.settings.n
        if r == 0:
            return [Item(answer_key(self.problems[i].task_id, j), i, j, INIT, 0, None)
                    for i in chunk for j in range(n)]
        return [Item(answer_key(self.problems[i].task_id, j, m, r), i, j, m, r, s)
                for m in self.settings.methods for i in chunk
                for j, s in enumerate(self.states[m][r - 1][i]) if not s.passed]

    def _requests(self, items: list[Item]) -> tuple[list[TeacherRequest], list[list[Item]]]:
        """Requests for the items still unanswered: one per problem (n answers) at round 0,
        one per sample in a refinement round; with the items each request answers."""
        s, groups = self.settings, {}
        for it in items:
            if it.key not in self.answers:
                groups.setdefault(it.i if it.method == INIT else it.key, []).append(it)
        requests = []
        for group in groups.values():
            it, problem = group[0], self.problems[group[0].i]
            if it.method == INIT:
                key = problem.task_id
                record = {"problem": self.texts[it.i]}
                n, temperature = s.n, s.temperature
            else:
                key = it.key
                record = {"problem": self.texts[it.i], "wrong_code": it.before.code,
                          "feedback": it.before.feedback}
                n, temperature = 1, s.refinement_temperature
            requests.append(TeacherRequest(
                key=key, n=n, temperature=temperature, top_p=s.top_p, max_tokens=s.max_new_tokens,
                seed=key_seed(s.seed, self.name, it.method, key),
                messages=prompts.messages(record, prompt_format(it.method), with_answer=False,
                                          shots=self.shots.get(it.method, ()))))
        return requests, list(groups.values())

    def _answer(self, items: list[Item], model, clock: Throughput) -> None:
        requests, groups = self._requests(items)
        if not requests:
            return
        try:
            replies = clock.timed("generate", model.answer, requests)
        except TeacherUnavailable as err:
            raise SelfDebugError(f"the model stopped answering: {err}. Saved work stays; rerun the "
                                 "same command to resume") from err
        if len(replies) != len(requests):
            raise SelfDebugError(f"the model gave {len(replies)} replies to {len(requests)} requests")
        records = []
        for request, reply, group in zip(requests, replies, groups):
            if len(reply.texts) != request.n or len(reply.errors) != request.n:
                raise SelfDebugError(f"the model gave {len(reply.texts)} answers to request "
                                     f"{request.key}, which asked for {request.n}")
            clock.answers += request.n
            clock.tokens += reply.completion_tokens
            for it in group:
                index = it.j if it.method == INIT else 0
                records.append(_answer_record(it, reply.texts[index], reply.errors[index]))
        store.append_records(self.dir, "answers", 0, records)
        self.answers.update((r["key"], r) for r in records)

    # --- execution -----------------------------------------------------------------------
    def _submit(self, items: list[Item], pool) -> dict:
        """Futures of the items' verdicts (an answer without code is judged without running)."""
        futures = {}
        for it in items:
            code = self.answers[it.key]["code"]
            if code is None and it.method != INIT:
                continue
            futures[it.key] = pool.submit(program_for(self.problems[it.i], code or "",
                                                      f"{self.name}:{it.key}"))
        return futures

    def _collect(self, items: list[Item], futures: dict, clock: Throughput) -> None:
        records = []
        for it in items:
            if it.key not in futures:
                records.append({"key": it.key, "code_found": False, "passed": False})
                continue
            result = clock.timed("execute", futures[it.key].result)
            problem = self.problems[it.i]
            suites = suite_verdicts(problem, result.tests)
            records.append({"key": it.key, "code_found": self.answers[it.key]["code"] is not None,
                            "passed": all(suites.values()), "suites": suites,
                            "feedback": base_feedback(problem, result),
                            "fraction_passed": round(float(result.fraction_passed), 6),
                            "statuses": status_counts(result.tests), "error": result.error})
        store.append_records(self.dir, "verdicts", 0, records)
        self.verdicts.update((r["key"], r) for r in records)

    # --- chains --------------------------------------------------------------------------
    def _initial(self, i: int, j: int) -> Latest:
        key = answer_key(self.problems[i].task_id, j)
        verdict = self.verdicts[key]
        return Latest(self.answers[key]["code"] or "", verdict["passed"], verdict["feedback"])

    def _advance(self, method: str, r: int, i: int, j: int, before: Latest) -> Latest:
        if before.passed:
            return before
        key = answer_key(self.problems[i].task_id, j, method, r)
        verdict = self.verdicts[key]
        if not verdict["code_found"]:
            return before
        return Latest(self.answers[key]["code"], verdict["passed"], verdict["feedback"])

    # --- outputs -------------------------------------------------------------------------
    def summary(self) -> dict:
        """This benchmark's entry in results.json."""
        tasks = [p.task_id for p in self.problems]
        rounds = {m: chain_numbers([{t: [s.passed for s in row] for t, row in zip(tasks, grid)}
                                    for grid in states], self.settings.ks)
                  for m, states in self.states.items()}
        return {"problems": len(tasks), "samples": len(tasks) * self.settings.n, "rounds": rounds}

    def sample_files(self) -> dict[str, list[dict]]:
        """EvalPlus samples files: the code of every sample after each round of each chain."""
        files = {"round0.jsonl": self._sample_rows(self.states[INIT][0])}
        for m in self.settings.methods:
            for r in range(1, len(self.states[m])):
                files[f"{m}_round{r}.jsonl"] = self._sample_rows(self.states[m][r])
        return files

    def _sample_rows(self, grid: list[list[Latest]]) -> list[dict]:
        return [{"task_id": p.task_id, "completion_id": j, "solution": s.code}
                for p, row in zip(self.problems, grid) for j, s in enumerate(row)]

    def explanation_items(self) -> list:
        """What an explanation judge grades (LeDex §4): each round-1 Explain+Refine answer that
        has an explanation, with the wrong code and feedback it explained and its refinement."""
        from ledex_jax.evaluate.judge import JudgeItem

        if "explain_refine" not in self.states or len(self.states["explain_refine"]) < 2:
            return []
        items = []
        for i, (problem, row) in enumerate(zip(self.problems, self.states["explain_refine"][0])):
            for j, before in enumerate(row):
                key = answer_key(problem.task_id, j, "explain_refine", 1)
                answer = self.answers.get(key)
                if before.passed or answer is None or not answer.get("explanation"):
                    continue
                items.append(JudgeItem(key=f"{self.name}/{key}", problem=self.texts[i], wrong_code=before.code,
                                       feedback=before.feedback, explanation=answer["explanation"],
                                       refined_code=answer["code"],
                                       refinement_passed=bool(self.verdicts.get(key, {}).get("passed"))))
        return items

    def per_sample_rows(self) -> list[dict]:
        """One row per answer judged (initial samples and every refinement asked for)."""
        rows = []
        for r in range(max(len(chain) for chain in self.states.values())):
            for m in ((INIT,) if r == 0 else self.settings.methods):
                for i, p in enumerate(self.problems):
                    for j in range(self.settings.n):
                        key = answer_key(p.task_id, j, m, r)
                        if key in self.verdicts:
                            verdict = self.verdicts[key]
                            rows.append({"benchmark": self.name, "task_id": p.task_id, "completion_id": j,
                                         "method": m, "round": r,
                                         **{k: verdict[k] for k in VERDICT_FIELDS if k in verdict}})
        return rows


def _answer_record(it: Item, text: str, error: str) -> dict:
    if error:
        code, explanation = None, ""
    elif it.method == "explain_refine":
        explanation, code = prompts.split_answer(text)
        code = code if code and code.strip() else None
    else:
        code, explanation = extract_code(text), ""
    record = {"key": it.key, "text": text, "code": code, "error": error}
    if it.method == "explain_refine":
        record["explanation"] = explanation
    return record


class SelfDebugEval:
    """An evaluation in ``workdir``: built (and checked against what the workdir holds) before
    any model is loaded, then run with a model and an execution pool."""

    def __init__(self, benchmarks: Sequence[Benchmark], settings: Settings, workdir: str | Path, *,
                 model_spec: str, label: str | None = None):
        names = [b.name for b in benchmarks]
        if not benchmarks or len(set(names)) != len(names):
            raise SelfDebugError(f"benchmarks {names}: give at least one, each once")
        self.workdir, self.settings = Path(workdir), settings
        self.model_spec, self.label = model_spec, label or model_spec
        check_workdir(self.workdir)
        self.runs = [BenchmarkRun(b, settings, self.workdir, model_spec) for b in benchmarks]
        for run in self.runs:
            run.check(self.workdir)

    def run(self, model, pool, progress: bool = True, load_seconds: float = 0.0) -> dict:
        """Evaluates ``model`` (anything with ``answer(requests) -> replies``, e.g. a collection
        Teacher), resuming saved work; writes the samples files, per_sample.jsonl and
        results.json, and returns the results."""
        start = time.perf_counter()
        clock = Throughput()
        for run in self.runs:
            run.run(model, pool, clock, progress)
        per_benchmark = {run.name: run.summary() for run in self.runs}
        results = {"version": RESULTS_VERSION, "model": self.model_spec, "label": self.label,
                   "settings": self.settings.reported(), "benchmarks": per_benchmark,
                   "overall": overall(per_benchmark)}
        write_outputs(self.workdir, self.runs)
        results["throughput"] = clock.report(time.perf_counter() - start + load_seconds,
                                             {"load": load_seconds} if load_seconds else {})
        store.write_atomic(results_path(self.workdir), (json.dumps(results, indent=1) + "\n").encode())
        return results


    def explanation_items(self) -> list:
        """Every benchmark's round-1 explanations, for `judge.judge_explanations` (after `run`)."""
        return [item for run in self.runs for item in run.explanation_items()]


def results_path(workdir: str | Path) -> Path:
    return Path(workdir) / "results.json"


def write_outputs(workdir: Path, runs: Sequence[BenchmarkRun]) -> None:
    """The EvalPlus samples files and per_sample.jsonl."""
    for run in runs:
        folder = workdir / "samples" / run.name
        folder.mkdir(parents=True, exist_ok=True)
        for name, rows in run.sample_files().items():
            store.write_atomic(folder / name, _jsonl(rows))
    store.write_atomic(workdir / "per_sample.jsonl",
                       _jsonl([row for run in runs for row in run.per_sample_rows()]))


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def default_workdir(model_spec: str, benchmarks: Sequence[str], settings: Settings) -> Path:
    """runs/eval/<model>/<benchmarks>-n<n>-t<temperature>: a new folder for other sampling."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_spec).strip("_.") or "model"
    return Path("runs") / "eval" / slug / f"{'+'.join(benchmarks)}-n{settings.n}-t{settings.temperature:g}"


def summary_text(results: dict) -> str:
    """Per benchmark and method: pass@k per round and the success refinement rate."""
    lines = []
    for name, bench in [*results["benchmarks"].items(), ("overall", results["overall"])]:
        extra = f", {bench['samples']} samples" if "samples" in bench else ""
        lines.append(f"{name} ({bench['problems']} problems{extra})")
        for method, records in bench["rounds"].items():
            for rec in records if method == INIT else records[1:]:
                ks = "  ".join(f"{k} {v * 100:6.2f}" for k, v in rec.items() if k.startswith("pass@"))
                line = f"  {method:<15} round {rec['round']}: {ks}  passed {rec['passed']}/{rec['passed'] + rec['wrong']}"
                if "refined" in rec:
                    rate = "n/a" if rec["success_rate"] is None else f"{rec['success_rate'] * 100:.2f}%"
                    line += f"  success {rec['fixed']}/{rec['refined']} ({rate})"
                lines.append(line)
    t = results.get("throughput", {})
    if t:
        tokens = (f", {t['generated_tokens_per_s']:.1f} generated tokens/s"
                  if t.get("generated_tokens_per_s") else "")
        rate = f"{t['samples_per_s']:.3f}" if t.get("samples_per_s") is not None else "n/a"
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in t.get("stage_seconds", {}).items())
        lines.append(f"throughput: {t['seconds']:.1f}s, {t['answers']} answers, {rate} answers/s{tokens} "
                     f"({stages})")
    return "\n".join(lines)

