"""The LeDex collection pipeline (LEDEX.md §1), in stages that resume where a run stopped.

    sample   n solutions per problem from the model (prefilled once per problem)
    execute  every unique solution in the execution pool: verdicts and the feedback text
    teach    for every wrong solution, the teacher's explanations + refinements
    verify   every refinement executed: passing ones are correct (and so their explanations)
    export   sft.jsonl, rl.jsonl, stats.json (+ TFDS) and the paper's Table 1

Work is cut into chunks of ``sample.problems_per_chunk`` problems, in the global problem order;
the chunk is the unit of every stage, of resuming and of sharding (process p of P takes chunks
c with c % P == p, so a chunk's batch, and with it its output, does not depend on P). A chunk
whose records are all present is skipped; a partial one is recomputed whole (same batch, same
seeds: same records) and only its missing records are appended. Keys:
``p000012/s003`` (sample), ``p000012/u001`` (unique solution), ``p000012/u001/t04`` (teacher
answer and its verification).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from ledex_jax.collect import store
from ledex_jax.collect.problems import TrainingProblem, few_shot_records, load_dataset
from ledex_jax.collect.teacher_api import TeacherRequest, TeacherUnavailable, key_seed
from ledex_jax.data import prompts

log = logging.getLogger(__name__)

STAGES = ("sample", "execute", "teach", "verify", "export")
# Fields that change how a run executes but not what it produces: a resumed run may change them.
RUNTIME_FIELDS = ("execute.workers", "teacher.max_concurrency", "teacher.timeout", "teacher.max_retries",
                  "distributed", "export.tfds")


class CollectionError(RuntimeError):
    """A run that cannot go on as asked; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Chunk:
    index: int
    problems: tuple[tuple[int, TrainingProblem], ...]  # (global problem index, problem)


def pkey(index: int) -> str:
    return f"p{index:06d}"


def extract_code(text: str) -> str | None:
    """The program in a code-generation answer: its last complete ```python block, else the
    whole answer when it parses as Python (base models often write bare code); None if neither."""
    import ast

    _, code = prompts.split_answer(text)
    if code is not None:
        return code if code.strip() else None
    bare = text.replace(prompts.END, "").strip()
    if not bare:
        return None
    try:
        ast.parse(bare)
    except (SyntaxError, ValueError):
        return None
    return bare


def manifest_config(cfg) -> dict:
    """The config as the manifest records it: everything that decides the output."""
    d = json.loads(cfg.to_json())
    for field in RUNTIME_FIELDS:
        *parents, leaf = field.split(".")
        node = d
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return d


class Collection:
    """One process's share of a collection run in ``workdir``."""

    def __init__(self, cfg, workdir, process_index: int = 0, process_count: int = 1, progress: bool = True):
        self.cfg, self.workdir = cfg, Path(workdir)
        self.process_index, self.process_count, self.progress = process_index, process_count, progress
        self.problems: list[TrainingProblem] = []
        self.shots: dict[str, list[dict]] = {}
        for name in [d.strip() for d in cfg.data.datasets.split(",") if d.strip()]:
            self.problems += load_dataset(name, self._data_path(name), cfg.data.max_problems)
            self.shots[name] = few_shot_records(name, cfg.data.mbpp_path, cfg.data.few_shot)
        if not self.problems:
            raise CollectionError("no problems: config.data.datasets names none (or max_problems is 0)")
        size = cfg.sample.problems_per_chunk
        if size < 1:
            raise CollectionError(f"config.sample.problems_per_chunk={size} must be >= 1")
        indexed = list(enumerate(self.problems))
        self.chunks = [Chunk(c, tuple(indexed[c * size:(c + 1) * size])) for c in range(-(-len(indexed) // size))]
        self.mine = [c for c in self.chunks if c.index % process_count == process_index]
        self._policy = self._teacher = self._pool = None
        self.throughput: dict[str, dict] = {}

    def _data_path(self, name: str) -> str:
        return {"demo": self.cfg.data.demo_path, "mbpp": self.cfg.data.mbpp_path,
                "apps": self.cfg.data.apps_path, "codecontests": self.cfg.data.codecontests_path}[name]

    # --- orchestration ------------------------------------------------------------------
    def run(self, stage: str = "all") -> None:
        if stage != "all" and stage not in STAGES:
            raise CollectionError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)} or all")
        self._check_manifest()
        try:
            for name in STAGES if stage == "all" else (stage,):
                if name == "export":
                    self.export()
                    continue
                t0 = time.perf_counter()
                if stage == "verify" and (self.workdir / "sft.jsonl").exists():
                    made = self.audit_export()  # asked to verify an exported collection
                else:
                    made = getattr(self, f"stage_{name}")()
                self._note(name, made, time.perf_counter() - t0)
        finally:
            self.close()

    def close(self) -> None:
        for obj in (self._pool, self._teacher, self._policy):
            if obj is not None:
                obj.close()
        self._pool = self._teacher = self._policy = None

    def _check_manifest(self) -> None:
        config = manifest_config(self.cfg)
        if self.process_index == 0:
            store.check_manifest(self.workdir, config, write=True)
            return
        deadline = time.monotonic() + 300
        while not (self.workdir / store.MANIFEST).exists():  # process 0 writes it
            if time.monotonic() > deadline:
                raise CollectionError(f"{self.workdir / store.MANIFEST} did not appear: is process 0 running?")
            time.sleep(0.5)
        store.check_manifest(self.workdir, config, write=False)

    def _note(self, stage: str, made: dict, seconds: float) -> None:
        rates = {f"{k}_per_s": round(v / seconds, 3) for k, v in made.items() if seconds > 0}
        self.throughput[stage] = {"seconds": round(seconds, 2), **made, **rates}
        log.info("%s: %s", stage, self.throughput[stage])
        path = self.workdir / f"throughput-{self.process_index:05d}.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        old[stage] = self.throughput[stage]
        store.write_atomic(path, json.dumps(old, indent=1, sort_keys=True).encode())

    def _pending(self, stage: str, keys_of) -> tuple[dict, list[Chunk]]:
        """(the stage's records so far, my chunks that still miss some)."""
        done = store.read_stage(self.workdir, stage)
        return done, [c for c in self.mine if not all(k in done for k in keys_of(c))]

    def _bar(self, total: int, desc: str):
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=desc, unit="chunk", disable=not self.progress)

    # --- models, teacher, pool -------------------------------------------------------------
    def policy(self):
        if self._policy is None:
            from ledex_jax.collect.sampler_teacher import SamplerTeacher
            from ledex_jax.models.sources import load_model_and_tokenizer

            m, mesh = self.cfg.model, self.local_mesh()
            model, _, tokenizer = load_model_and_tokenizer(m.checkpoint, m.dtype or None, m.tokenizer or None, mesh)
            longest = max(self.cfg.sample.max_prompt_len,
                          self.cfg.teacher.max_prompt_len if self.cfg.teacher.kind == "self" else 0)
            self._policy = SamplerTeacher(model, tokenizer, name="self", style=self.cfg.prompt.style,
                                          max_prompt_len=longest, max_batch=self.cfg.sample.max_batch, mesh=mesh)
        return self._policy

    def local_mesh(self):
        """The mesh a local model samples on: this host's devices only (hosts do not talk while
        collecting); None on a single device."""
        from ledex_jax.sharding import local_mesh

        return local_mesh(self.cfg.sample.mesh_shape)

    def teacher(self):
        if self._teacher is None:
            t = self.cfg.teacher
            kind, _, arg = t.kind.partition(":")
            if t.kind == "self":
                return self.policy()
            if kind in ("hf", "gguf") and arg:
                from ledex_jax.collect.sampler_teacher import SamplerTeacher
                from ledex_jax.models.sources import load_model_and_tokenizer

                mesh = self.local_mesh()
                model, _, tokenizer = load_model_and_tokenizer(arg, self.cfg.model.dtype or None, mesh=mesh)
                self._teacher = SamplerTeacher(model, tokenizer, name=t.kind, style=t.style or self.cfg.prompt.style,
                                               max_prompt_len=t.max_prompt_len, max_batch=self.cfg.sample.max_batch,
                                               mesh=mesh)
            elif kind == "openai" and arg:
                from ledex_jax.collect.openai_teacher import OpenAITeacher

                try:
                    self._teacher = OpenAITeacher(arg, base_url=t.base_url or None, api_key_env=t.api_key_env,
                                                  max_concurrency=t.max_concurrency, timeout=t.timeout,
                                                  max_retries=t.max_retries)
                except ValueError as err:  # a missing key variable, a bad setting
                    raise CollectionError(f"config.teacher: {err}") from None
            else:
                raise CollectionError(f"config.teacher.kind={t.kind!r}; use self, hf:PATH, gguf:PATH or "
                                      "openai:MODEL")
        return self._teacher

    def pool(self):
        if self._pool is None:
            from executors import ExecutionPool, SandboxUnavailable

            e = self.cfg.execute
            try:
                self._pool = ExecutionPool(workers=e.workers or None, per_test_timeout=e.per_test_timeout,
                                           allow_unsandboxed=e.allow_unsandboxed)
            except SandboxUnavailable as err:
                raise CollectionError(f"{err} (or set config.execute.allow_unsandboxed=True)") from err
        return self._pool

    def _run_programs(self, programs):
        return self.pool().run(programs) if programs else []

    # --- sample -------------------------------------------------------------------------
    def sample_keys(self, chunk: Chunk) -> list[str]:
        return [f"{pkey(i)}/s{j:03d}" for i, _ in chunk.problems for j in range(self.cfg.sample.n)]

    def sample_requests(self, chunk: Chunk) -> list[TeacherRequest]:
        s = self.cfg.sample
        return [TeacherRequest(key=pkey(i), n=s.n, temperature=s.temperature, top_p=s.top_p,
                               max_tokens=s.max_new_tokens, seed=key_seed(self.cfg.seed, "sample", pkey(i)),
                               messages=prompts.messages({"problem": p.text}, "codegen", with_answer=False,
                                                         shots=self.shots[p.dataset]))
                for i, p in chunk.problems]

    def stage_sample(self) -> dict:
        done, todo = self._pending("sample", self.sample_keys)
        made, bar = 0, self._bar(len(todo), "sample")
        for chunk in todo:
            replies = self.policy().answer(self.sample_requests(chunk))
            records = []
            for (i, p), reply in zip(chunk.problems, replies):
                for j, (text, err) in enumerate(zip(reply.texts, reply.errors)):
                    records.append({"key": f"{pkey(i)}/s{j:03d}", "source": p.source, "text": text,
                                    "code": extract_code(text) if not err else None, "error": err,
                                    **({"prompt_tokens": reply.prompt_tokens,
                                        "completion_tokens": reply.completion_tokens} if j == 0 else {})})
            made += store.append_records(self.workdir, "sample", self.process_index,
                                         [r for r in records if r["key"] not in done])
            bar.update()
        bar.close()
        return {"samples": made}

    # --- execute ------------------------------------------------------------------------
    def unique_solutions(self, chunk: Chunk, samples: dict) -> list[tuple[str, TrainingProblem, str, list[int]]]:
        """[(unique key, problem, code, sample indices)] in order of first appearance."""
        out = []
        for i, p in chunk.problems:
            seen: dict[str, list[int]] = {}
            for j in range(self.cfg.sample.n):
                rec = samples.get(f"{pkey(i)}/s{j:03d}")
                if rec is None:
                    raise CollectionError(f"{p.source}: sample {j} is missing; run --stage sample first")
                if rec["code"] is not None:
                    seen.setdefault(rec["code"].strip("\n"), []).append(j)
            out += [(f"{pkey(i)}/u{k:03d}", p, code, js) for k, (code, js) in enumerate(seen.items())]
        return out

    def stage_execute(self) -> dict:
        samples = store.read_stage(self.workdir, "sample")
        uniques = {c.index: self.unique_solutions(c, samples) for c in self.mine}
        done, todo = self._pending("execute", lambda c: [u[0] for u in uniques[c.index]])
        made, bar = 0, self._bar(len(todo), "execute")
        for chunk in todo:
            results = self._run_programs([_program(p, code, key) for key, p, code, _ in uniques[chunk.index]])
            records = [{"key": key, "source": p.source, "code": code, "samples": js, **_verdict(res)}
                       for (key, p, code, js), res in zip(uniques[chunk.index], results)]
            made += store.append_records(self.workdir, "execute", self.process_index,
                                         [r for r in records if r["key"] not in done])
            bar.update()
        bar.close()
        return {"programs": made}

    # --- teach --------------------------------------------------------------------------
    def _wrong(self, chunk: Chunk, executed: dict) -> list[tuple[dict, TrainingProblem]]:
        out = []
        for i, p in chunk.problems:
            k = 0
            while (rec := executed.get(f"{pkey(i)}/u{k:03d}")) is not None:
                if not rec["passed"] and not rec["error"]:
                    out.append((rec, p))
                k += 1
        return out

    def teach_keys(self, chunk: Chunk, executed: dict) -> list[str]:
        return [f"{rec['key']}/t{m:02d}" for rec, _ in self._wrong(chunk, executed) for m in range(self.cfg.teacher.n)]

    def teacher_shots(self) -> list[dict]:
        if self.cfg.teacher.few_shot <= 0:
            return []
        from ledex_jax.data.records import read_sft_jsonl

        demo = Path(__file__).resolve().parent.parent / "data" / "demo" / "sft_demo.jsonl"
        shots = [r for r in read_sft_jsonl(demo) if r.format == "explain_refine"]
        return shots[:self.cfg.teacher.few_shot]

    def stage_teach(self) -> dict:
        executed = store.read_stage(self.workdir, "execute")
        self._require_executed(executed)
        done, todo = self._pending("teach", lambda c: self.teach_keys(c, executed))
        t, shots = self.cfg.teacher, self.teacher_shots()
        made, asked, bar = 0, 0, self._bar(len(todo), "teach")
        for chunk in todo:
            wrong = self._wrong(chunk, executed)
            asked += len(wrong)
            requests = [TeacherRequest(
                key=rec["key"], n=t.n, temperature=t.temperature, top_p=t.top_p, max_tokens=t.max_new_tokens,
                seed=key_seed(self.cfg.seed, "teach", rec["key"]),
                messages=prompts.messages({"problem": p.text, "wrong_code": rec["code"], "feedback": rec["feedback"]},
                                          "explain_refine", with_answer=False, shots=shots))
                for rec, p in wrong]
            try:
                replies = self.teacher().answer(requests) if requests else []
            except TeacherUnavailable as err:
                raise CollectionError(f"teach: {err}") from err
            records = []
            for (rec, p), reply in zip(wrong, replies):
                for m, (text, err) in enumerate(zip(reply.texts, reply.errors)):
                    explanation, code = prompts.split_answer(text)
                    problem = err or ("no ```python code block" if code is None else
                                      "no explanation before the code" if not explanation else "")
                    records.append({"key": f"{rec['key']}/t{m:02d}", "source": p.source, "text": text,
                                    "explanation": explanation if not problem else "",
                                    "code": code if not problem else None, "error": problem,
                                    **({"prompt_tokens": reply.prompt_tokens,
                                        "completion_tokens": reply.completion_tokens} if m == 0 else {})})
            made += store.append_records(self.workdir, "teach", self.process_index,
                                         [r for r in records if r["key"] not in done])
            bar.update()
        bar.close()
        return {"answers": made, "requests": asked}

    def _require_executed(self, executed: dict) -> None:
        samples = store.read_stage(self.workdir, "sample")
        for c in self.mine:
            if any(u[0] not in executed for u in self.unique_solutions(c, samples)):
                raise CollectionError(f"chunk {c.index} is not fully executed; run --stage execute first")

    # --- verify -------------------------------------------------------------------------
    def stage_verify(self) -> dict:
        executed = store.read_stage(self.workdir, "execute")
        taught = store.read_stage(self.workdir, "teach")
        keys = {c.index: self.teach_keys(c, executed) for c in self.mine}
        missing = [k for ks in keys.values() for k in ks if k not in taught]
        if missing:
            raise CollectionError(f"{len(missing)} teacher answers are missing (first: {missing[0]}); run "
                                  "--stage teach first")
        by_source = {p.source: p for p in self.problems}
        done, todo = self._pending("verify", lambda c: keys[c.index])
        made, bar = 0, self._bar(len(todo), "verify")
        for chunk in todo:
            answers = [taught[k] for k in keys[chunk.index]]
            runnable = [a for a in answers if a["code"] is not None]
            results = dict(zip((a["key"] for a in runnable), self._run_programs(
                [_program(by_source[a["source"]], a["code"], a["key"]) for a in runnable])))
            records = [{"key": a["key"], "source": a["source"],
                        **(_verdict(results[a["key"]]) if a["key"] in results else
                           {"passed": False, "feedback": "", "fraction_passed": 0.0, "statuses": {},
                            "error": "", "unparsable": a["error"]})}
                       for a in answers]
            made += store.append_records(self.workdir, "verify", self.process_index,
                                         [r for r in records if r["key"] not in done])
            bar.update()
        bar.close()
        return {"programs": made}

    def audit_export(self) -> dict:
        """`--stage verify` on an exported directory: every kept solution and refinement of
        sft.jsonl runs again; any that fails is an error."""
        from ledex_jax.data.records import read_sft_jsonl

        by_source = {p.source: p for p in self.problems}
        kept: dict[tuple[str, str], str] = {}
        for rec in read_sft_jsonl(self.workdir / "sft.jsonl"):
            if rec.source not in by_source:
                raise CollectionError(f"sft.jsonl record {rec.id}: source {rec.source!r} is not a problem of "
                                      "this config")
            kept.setdefault((rec.source, rec.refined_code), rec.id)
        items = sorted(kept.items(), key=lambda kv: kv[1])
        if self.process_index != 0:
            return {"programs": 0}
        results = self._run_programs([_program(by_source[s], code, rid) for (s, code), rid in items])
        failed = [(rid, r.feedback) for ((_, _), rid), r in zip(items, results) if not r.passed]
        if failed:
            lines = "\n".join(f"  {rid}: {fb.splitlines()[0] if fb else 'failed'}" for rid, fb in failed[:20])
            raise CollectionError(f"verify: {len(failed)} of {len(items)} kept solutions in sft.jsonl do not pass "
                                  f"their tests:\n{lines}")
        print(f"verify: all {len(items)} kept solutions and refinements in {self.workdir / 'sft.jsonl'} pass")
        return {"programs": len(items)}

    # --- export -------------------------------------------------------------------------
    def export(self) -> None:
        if self.process_count > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("ledex_collect_export")
        if self.process_index != 0:
            return
        from ledex_jax.collect.export import export_collection
        export_collection(self)


def _program(problem: TrainingProblem, code: str, program_id: str):
    from ledex_jax.evaluate.functional import program_for
    return program_for(problem.problem, code, program_id)


def _verdict(result) -> dict:
    from ledex_jax.evaluate.functional import status_counts
    return {"passed": bool(result.passed), "feedback": result.feedback,
            "fraction_passed": round(float(result.fraction_passed), 6), "statuses": status_counts(result.tests),
            "error": result.error}
