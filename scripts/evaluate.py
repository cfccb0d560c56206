"""Evaluates a model's self-debugging on code benchmarks, or scores a samples file.

Evaluate a model (LeDex §4): n samples per task, then rounds in which every failing sample gets
one refinement (Refine, Explain+Refine, or both as separate chains) from its own wrong code and
the execution feedback; pass@k, the success refinement rate per round and the problem-weighted
overall go to DIR/results.json, the samples of every round to DIR/samples/ (EvalPlus format),
and the table and plots beside them. A killed run resumes with the same command.

  python scripts/evaluate.py --model embedded:smollm2 --benchmark humaneval --n 4 --rounds 1 --limit 10
  python scripts/evaluate.py --model runs/sft-cl7b --benchmark mbpp,mbppplus \\
      --data_path mbpp=mbpp.jsonl,mbppplus=MbppPlus.jsonl --n 100 --temperature 0.8 --rounds 3
  python scripts/evaluate.py --model openai:gpt-3.5-turbo --benchmark humaneval   # key: $OPENAI_API_KEY
  python scripts/evaluate.py --model openai:smollm2 --base_url http://localhost:8000/v1 --api_key_env= ...
  # the paper's "Prompt" rows for a base model, and its greedy single refinement (Table 10):
  python scripts/evaluate.py --model codellama/CodeLlama-7b-hf --style starchat --few_shot 3 ...
  python scripts/evaluate.py --model ... --rounds 1 --refine_temperature 0

Score a samples file (human-eval/EvalPlus lines: ``task_id`` and ``solution`` or ``completion``;
results go to FILE_results.jsonl beside FILE.jsonl):

  python scripts/evaluate.py --benchmark=humaneval --samples=samples.jsonl
  python scripts/evaluate.py --benchmark=mbppplus --data_path=MbppPlus.jsonl --samples=s.jsonl --k=1
"""
import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

flags.DEFINE_string("benchmark", None, "Benchmark: humaneval, humanevalplus, mbpp, mbpp_sanitized or "
                    "mbppplus; with --model a comma-separated list (overall = problem-weighted).")
flags.DEFINE_string("samples", None, "Score this samples file (.jsonl or .jsonl.gz), many lines per task.")
flags.DEFINE_string("model", None, "Evaluate this model: embedded:smollm2, an HF directory or hub name, "
                    "a .gguf file, an SFT/RL workdir, or openai:MODEL (with --base_url for a served one).")
flags.DEFINE_string("data_path", None, "Benchmark file (MBPP, MBPP+, HumanEval+; HumanEval defaults to "
                    "the human-eval package's copy); several benchmarks: name=path,name=path.")
flags.DEFINE_string("split", "default", "MBPP split: test (default), train, validation, prompt, "
                    "or all.")
flags.DEFINE_string("k", "1,10", "Comma-separated k for pass@k (by default a k above --n is left out).")
flags.DEFINE_integer("workers", None, "Execution workers (default: one per CPU).")
flags.DEFINE_float("per_test_timeout", 3.0, "Seconds one test may run (MBPP+ raises it to its "
                   "slowest input's EvalPlus limit, 4x the reference's time).")
flags.DEFINE_string("cache_dir", None, "Where EvalPlus expected outputs are cached "
                    "(default ~/.cache/ledex_jax).")
flags.DEFINE_bool("overwrite", False, "--samples: replace an existing results file.")
flags.DEFINE_bool("allow_unsandboxed", False, "Run programs without namespaces where bubblewrap "
                  "cannot run (a program could then forge its verdict; refused without this flag).")
# --model
flags.DEFINE_integer("n", 100, "Initial samples per task.")
flags.DEFINE_float("temperature", 0.8, "Initial sampling temperature (0 = greedy).")
flags.DEFINE_float("top_p", 0.95, "Nucleus sampling mass.")
flags.DEFINE_integer("max_new_tokens", 512, "Longest answer in tokens (initial and refinements).")
flags.DEFINE_enum("refine", "both", ["none", "refine", "explain_refine", "both"],
                  "Refinement method(s); both = two independent chains from the same samples.")
flags.DEFINE_integer("rounds", 3, "Refinement rounds.")
flags.DEFINE_float("refine_temperature", None, "Refinement temperature (default: --temperature; 0 = "
                   "greedy, the paper's Table 10 single refinement).")
flags.DEFINE_integer("few_shot", 0, "Complete examples of the same format (codegen / refine / "
                     "explain_refine, from the bundled demo set) before each prompt: the Prompt rows.")
flags.DEFINE_integer("limit", None, "Evaluate the first N problems of each benchmark.")
flags.DEFINE_enum("style", "chat_template", ["chat_template", "starchat"],
                  "Prompt style of a local model: its chat template, or StarChat turns (base models).")
flags.DEFINE_integer("seed", 0, "Sampling seed (each answer's seed also follows from its key).")
flags.DEFINE_string("workdir", None, "Where the evaluation lives (default runs/eval/<model>/"
                    "<benchmarks>-n<n>-t<temperature>); rerun the same command to resume.")
flags.DEFINE_string("label", None, "Name of the model in tables and plots (default: --model).")
flags.DEFINE_integer("problems_per_chunk", 8, "Problems per unit of work (and of resuming).")
flags.DEFINE_integer("max_prompt_len", 2048, "Longest prompt in tokens (a longer one gets no answer).")
flags.DEFINE_integer("max_batch", None, "Local model: rows per device call, each call padded to it "
                     "(default 64 on accelerators, 16 on CPU; at most problems_per_chunk x n).")
flags.DEFINE_string("dtype", None, "Local model: parameter dtype (default: float32).")
flags.DEFINE_string("tokenizer", None, "Local model: tokenizer source, if not the checkpoint's.")
flags.DEFINE_string("base_url", None, "openai: the endpoint, e.g. http://localhost:8000/v1.")
flags.DEFINE_string("api_key_env", "OPENAI_API_KEY", "openai: variable holding the key ('' = none).")
flags.DEFINE_integer("max_concurrency", 8, "openai: requests in flight.")
flags.DEFINE_bool("progress", True, "Show progress bars.")
flags.DEFINE_string("judge", None, "Grade the round-1 Explain+Refine explanations 1-5 with this LLM judge, "
                    "openai:MODEL (the paper: 50 problems with wrong solutions; ledex_jax/evaluate/judge.py).")
flags.DEFINE_integer("judge_limit", 50, "--judge: problems to grade (one explanation each).")
flags.DEFINE_string("judge_base_url", None, "--judge: the judge's endpoint (default: the OpenAI API).")
flags.DEFINE_string("judge_api_key_env", "OPENAI_API_KEY", "--judge: variable holding the judge's key "
                    "('' = none needed).")
FLAGS = flags.FLAGS


def results_path(samples: str) -> Path:
    """FILE.jsonl (or FILE.jsonl.gz) -> FILE_results.jsonl in the same folder."""
    path = Path(samples)
    stem = path.name
    for suffix in (".gz", ".jsonl", ".json"):
        stem = stem[:-len(suffix)] if stem.endswith(suffix) else stem
    return path.with_name(f"{stem}_results.jsonl")


def write_results(path: Path, rows, overwrite: bool) -> None:
    """All-or-nothing write; without ``overwrite`` an existing file is never replaced."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    except FileExistsError:
        raise app.UsageError(f"{path} appeared while scoring; rerun with --overwrite to replace it")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def benchmark_names() -> list[str]:
    names = [n.strip() for n in (FLAGS.benchmark or "").split(",") if n.strip()]
    if len(set(names)) != len(names):
        raise app.UsageError(f"--benchmark {FLAGS.benchmark}: a benchmark is named twice")
    return names


def data_paths(names: list[str]) -> dict[str, str]:
    """--data_path as {benchmark: path}: one plain path for one benchmark, else name=path pairs."""
    text = FLAGS.data_path
    if not text:
        return {}
    if "=" not in text:
        if len(names) != 1:
            raise app.UsageError("with several benchmarks write --data_path name=path,name=path")
        return {names[0]: text}
    paths = {}
    for pair in text.split(","):
        name, sep, path = pair.partition("=")
        if not sep or name.strip() not in names:
            raise app.UsageError(f"--data_path {pair!r}: write name=path with a name of --benchmark "
                                 f"({', '.join(names)})")
        paths[name.strip()] = path.strip()
    return paths


def data_source(path: str | None) -> str:
    """Where a benchmark's problems came from, as the workdir's manifest records it."""
    return f"{os.path.abspath(path) if path else 'default'} split={FLAGS.split}"


def load_problems(name: str, path: str | None) -> list:
    """A benchmark's problems; loaders that compute expected outputs get --cache_dir/--workers."""
    from ledex_jax.data.benchmarks import BENCHMARKS, load_benchmark

    split = None if FLAGS.split == "all" else FLAGS.split
    options = {"cache_dir": FLAGS.cache_dir, "workers": FLAGS.workers}
    params = inspect.signature(BENCHMARKS[name][0]).parameters if name in BENCHMARKS else {}
    return load_benchmark(name, path, split, **{k: v for k, v in options.items() if k in params})


def execution_pool(problems):
    """The sandboxed pool, its per-test limit raised to the slowest test a benchmark allows."""
    from executors import ExecutionPool, SandboxUnavailable

    per_test = max([FLAGS.per_test_timeout] + [p.metadata.get("per_test_time_limit", 0.0)
                                               for p in problems])
    try:
        return ExecutionPool(workers=FLAGS.workers, per_test_timeout=per_test,
                             allow_unsandboxed=FLAGS.allow_unsandboxed)
    except SandboxUnavailable as err:
        raise app.UsageError(str(err))


def score_samples_file():
    """--samples: pass@k of a samples file, plus its per-sample results file."""
    from ledex_jax.data.benchmarks import BenchmarkDataError, normalize_task_id
    from ledex_jax.evaluate.functional import score_samples
    from ledex_jax.evaluate.pass_at_k import count_correct, mean_pass_at_k, parse_ks
    from ledex_jax.evaluate.samples import read_samples

    names = benchmark_names()
    if len(names) != 1:
        raise app.UsageError("--samples scores one benchmark; give a single --benchmark")
    name = names[0]
    try:
        ks = parse_ks(FLAGS.k)
    except ValueError as err:
        raise app.UsageError(f"--k: {err}")
    out_path = results_path(FLAGS.samples)
    if out_path.exists() and not FLAGS.overwrite:
        raise app.UsageError(f"{out_path} exists; pass --overwrite to replace it")
    try:
        problems = {p.task_id: p for p in load_problems(name, data_paths([name]).get(name))}
        samples = read_samples(FLAGS.samples, problems, lambda raw: normalize_task_id(name, raw))
    except BenchmarkDataError as err:
        raise app.UsageError(str(err))

    fewest = min(n for n, _ in count_correct((s.task_id, False) for s in samples).values())
    usable = [k for k in ks if k <= fewest]
    if FLAGS["k"].present and len(usable) < len(ks):
        raise app.UsageError(f"pass@{max(ks)} needs at least {max(ks)} samples for every task; "
                             f"the fewest here is {fewest}. Lower --k.")
    with execution_pool(problems.values()) as pool:
        results = score_samples(problems, samples, pool, progress=True)
    write_results(out_path, (r.to_json() for r in results), FLAGS.overwrite)

    counts = count_correct((r.task_id, r.passed) for r in results)
    print(f"{name}: {len(results)} samples of {len(counts)} tasks "
          f"(the benchmark has {len(problems)}); fewest samples per task: {fewest}")
    for k in ks:
        if k not in usable:
            print(f"pass@{k}: skipped, needs {k} samples per task (fewest: {fewest})")
    suite_names = list(next(iter(problems.values())).suites)
    if len(suite_names) > 1:  # MBPP+: the base suite alone, then all suites together
        base = count_correct((r.task_id, r.suites[suite_names[0]]) for r in results)
        for metric, value in mean_pass_at_k(base, usable).items():
            print(f"{metric} ({suite_names[0]}) = {value:.4f}")
    label = f" ({'+'.join(suite_names)})" if len(suite_names) > 1 else ""
    for metric, value in mean_pass_at_k(counts, usable).items():
        print(f"{metric}{label} = {value:.4f}")
    print(f"per-sample results: {out_path}")


def local_max_batch() -> int:
    """Rows per device call of a local model: every call is padded to it, so no more than a chunk
    holds, and on CPU, where rows cost in proportion, few (as the collection demo does)."""
    if FLAGS.max_batch is not None:
        if FLAGS.max_batch < 1:
            raise app.UsageError(f"--max_batch={FLAGS.max_batch}: use 1 or more rows")
        wanted = FLAGS.max_batch
    else:
        import jax
        wanted = 16 if jax.default_backend() == "cpu" else 64
    return max(1, min(wanted, FLAGS.problems_per_chunk * FLAGS.n))


def evaluate_model():
    """--model: the self-debug evaluation, resumable in --workdir."""
    from ledex_jax.data.benchmarks import BenchmarkDataError
    from ledex_jax.evaluate import self_debug
    from ledex_jax.evaluate.eval_model import EvalModelError, ModelOptions, load_eval_model
    from ledex_jax.evaluate.pass_at_k import parse_ks
    from ledex_jax.evaluate.round_metrics import usable_ks

    names = benchmark_names()
    if not names:
        raise app.UsageError("--model needs --benchmark (one or a comma-separated list)")
    try:
        ks = parse_ks(FLAGS.k)
    except ValueError as err:
        raise app.UsageError(f"--k: {err}")
    if not FLAGS["k"].present:
        ks = usable_ks(ks, FLAGS.n)
    methods = {"none": (), "both": self_debug.METHODS}.get(FLAGS.refine, (FLAGS.refine,))
    if FLAGS.judge:  # a bad judge spec fails now, not after the evaluation
        from ledex_jax.evaluate.judge import JudgeError, judge_model
        try:
            judge_model(FLAGS.judge)
        except JudgeError as err:
            raise app.UsageError(f"--judge: {err}")
        if "explain_refine" not in methods or FLAGS.rounds < 1:
            raise app.UsageError("--judge grades Explain+Refine explanations: use --refine explain_refine or "
                                 "both, and --rounds 1 or more")
    paths = data_paths(names)
    try:
        settings = self_debug.Settings(
            n=FLAGS.n, temperature=FLAGS.temperature, top_p=FLAGS.top_p, max_new_tokens=FLAGS.max_new_tokens,
            ks=ks, rounds=FLAGS.rounds, methods=methods, few_shot=FLAGS.few_shot,
            refine_temperature=FLAGS.refine_temperature, limit=FLAGS.limit, style=FLAGS.style, seed=FLAGS.seed,
            max_prompt_len=FLAGS.max_prompt_len, problems_per_chunk=FLAGS.problems_per_chunk)
        benchmarks = [self_debug.Benchmark(name, load_problems(name, paths.get(name)),
                                           source=data_source(paths.get(name)))
                      for name in names]
        workdir = Path(FLAGS.workdir) if FLAGS.workdir else self_debug.default_workdir(FLAGS.model, names, settings)
        evaluation = self_debug.SelfDebugEval(benchmarks, settings, workdir, model_spec=FLAGS.model,
                                              label=FLAGS.label)
    except (self_debug.SelfDebugError, BenchmarkDataError) as err:
        raise app.UsageError(str(err))

    start = time.perf_counter()
    max_batch = local_max_batch()
    options = ModelOptions(style=FLAGS.style, max_prompt_len=FLAGS.max_prompt_len, max_batch=max_batch,
                           dtype=FLAGS.dtype, tokenizer=FLAGS.tokenizer, base_url=FLAGS.base_url,
                           api_key_env=FLAGS.api_key_env, max_concurrency=FLAGS.max_concurrency)
    try:
        model = load_eval_model(FLAGS.model, options)
    except EvalModelError as err:
        raise app.UsageError(str(err))
    load_seconds = time.perf_counter() - start
    try:
        with execution_pool([p for b in benchmarks for p in b.problems]) as pool:
            results = evaluation.run(model, pool, progress=FLAGS.progress, load_seconds=load_seconds)
    except self_debug.SelfDebugError as err:
        print(f"evaluate: {err}", file=sys.stderr)
        sys.exit(1)
    finally:
        model.close()

    if FLAGS.judge:
        results["explanations"] = judge_explanations(evaluation, workdir)
        store_results(results, workdir)
    print(self_debug.summary_text(results))
    print(f"workdir: {workdir}\n  results: {self_debug.results_path(workdir)}\n"
          f"  samples (EvalPlus format): {workdir / 'samples'}\n  per sample: {workdir / 'per_sample.jsonl'}")
    for what, path in write_reports(results, workdir).items():
        print(f"  {what}: {path}")


def judge_explanations(evaluation, workdir: Path) -> dict:
    """--judge: scores of up to --judge_limit explanations (one per problem) to
    DIR/explanation_scores.json; returns results.json's "explanations" entry."""
    from ledex_jax.evaluate import judge
    from ledex_jax.collect import store

    items = judge.select_items(evaluation.explanation_items(), limit=FLAGS.judge_limit, seed=FLAGS.seed)
    if not items:
        print("judge: no explanation to grade (run --refine explain_refine or both, with wrong samples)")
        return {"judge": FLAGS.judge, "count": 0, "scored": 0, "unparsed": 0, "mean": None,
                "distribution": {str(k): 0 for k in judge.SCORES}}
    try:
        report = judge.judge_explanations(items, FLAGS.judge, base_url=FLAGS.judge_base_url,
                                          api_key_env=FLAGS.judge_api_key_env,
                                          max_concurrency=FLAGS.max_concurrency)
    except judge.JudgeError as err:
        raise app.UsageError(f"--judge: {err}")
    store.write_atomic(workdir / "explanation_scores.json",
                       (json.dumps({"judge": report.judge, "scores": report.scores}, indent=1) + "\n").encode())
    return report.to_json()


def store_results(results: dict, workdir: Path) -> None:
    from ledex_jax.collect import store
    from ledex_jax.evaluate.self_debug import results_path
    store.write_atomic(results_path(workdir), (json.dumps(results, indent=1) + "\n").encode())


def write_reports(results: dict, workdir: Path) -> dict:
    """The Markdown table and the plots (ledex_jax.evaluate.report)."""
    from ledex_jax.evaluate.report import write_reports as write
    return write(results, workdir)


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if FLAGS.samples and FLAGS.model:
        raise app.UsageError("give --model (evaluate a model) or --samples (score a file), not both")
    if not FLAGS.benchmark or not (FLAGS.samples or FLAGS.model):
        raise app.UsageError("--benchmark and --samples are required to score a file (or --benchmark and "
                             "--model to evaluate a model)")
    if FLAGS.samples:
        score_samples_file()
    else:
        evaluate_model()


if __name__ == "__main__":
    app.run(main)
