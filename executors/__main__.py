"""Batch CLI: run assertion-tested programs from JSONL, write one result line per input line.

    python -m executors --input jobs.jsonl --output results.jsonl [--workers N]

Input line: {"id": str, "program": str, "tests": [str, ...], "timeout": float (optional)}, each
test an assertion such as "assert f(1) == 2". Output line, in input order:
{"id", "passed", "fraction_passed", "tests": [{"status", "message"}], "feedback"} plus "error"
when the line itself was bad (not JSON, missing or mistyped fields) or the program could not be
judged; a bad line never stops the batch.
"""
import argparse
import collections
import json
import sys

from executors import ExecutionPool, Program, SandboxUnavailable, TestCase


def parse_line(text, lineno):
    """(Program, None) or (None, error record) for one input line."""
    fallback_id = f"line:{lineno}"
    try:
        obj = json.loads(text)
    except ValueError as e:
        return None, _error(fallback_id, f"line {lineno} is not valid JSON: {e}")
    if not isinstance(obj, dict):
        return None, _error(fallback_id, f"line {lineno} is not a JSON object")
    pid = obj.get("id")
    if not isinstance(pid, str) or not pid:
        return None, _error(fallback_id, f"line {lineno}: 'id' must be a non-empty string")
    program, tests, timeout = obj.get("program"), obj.get("tests"), obj.get("timeout")
    if not isinstance(program, str):
        return None, _error(pid, "'program' must be a string")
    if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
        return None, _error(pid, "'tests' must be a list of strings")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout > 0 or timeout == float("inf")):
        return None, _error(pid, "'timeout' must be a positive number")
    return Program(pid, program, [TestCase.assertion(t) for t in tests], timeout=timeout), None


def _error(pid, message):
    return {"id": pid, "passed": False, "fraction_passed": 0.0, "tests": [], "feedback": "",
            "error": message}


def record(result):
    out = {"id": result.id, "passed": result.passed, "fraction_passed": result.fraction_passed,
           "tests": [{"status": t.status, "message": t.message} for t in result.tests],
           "feedback": result.feedback}
    if result.error:
        out["error"] = result.error
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m executors", description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True, help="JSONL file of programs")
    ap.add_argument("--output", required=True, help="JSONL file to write results to")
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: CPUs)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    ap.add_argument("--per-test-timeout", type=float, default=3.0)
    ap.add_argument("--memory-mb", type=int, default=2048)
    ap.add_argument("--sandbox", choices=("auto", "bwrap", "none"), default="auto")
    ap.add_argument("--allow-unsandboxed", action="store_true",
                    help="run without namespaces where bubblewrap cannot (verdicts can then be "
                         "forged; refused without this flag)")
    ap.add_argument("--progress", action="store_true", help="show a progress bar")
    args = ap.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        ap.error("--workers must be at least 1")
    try:  # before any file is opened or created
        pool = ExecutionPool(workers=args.workers, per_test_timeout=args.per_test_timeout,
                             memory_mb=args.memory_mb, sandbox=args.sandbox,
                             allow_unsandboxed=args.allow_unsandboxed)
    except SandboxUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        inp = open(args.input, encoding="utf-8", errors="replace")
    except OSError as e:
        print(f"error: cannot read {args.input}: {e}", file=sys.stderr)
        pool.close()
        return 2
    try:
        out = open(args.output, "w" if args.overwrite else "x", encoding="utf-8")
    except OSError as e:
        inp.close()
        why = "exists; pass --overwrite to replace it" if isinstance(e, FileExistsError) else str(e)
        print(f"error: {args.output} {why}", file=sys.stderr)
        pool.close()
        return 2
    n_lines = n_passed = 0
    with inp, out, pool:
        window = collections.deque()  # bounded look-ahead keeps memory flat on huge inputs
        limit = 8 * pool.workers

        def flush(until):
            nonlocal n_passed
            while len(window) > until:
                item = window.popleft()
                rec = item if isinstance(item, dict) else record(item.result())
                n_passed += rec["passed"]
                out.write(json.dumps(rec) + "\n")

        for lineno, text in enumerate(inp, 1):
            if not text.strip():
                continue
            n_lines += 1
            program, err = parse_line(text, lineno)
            window.append(err if program is None else pool.submit(program))
            flush(limit)
            if args.progress and n_lines % 100 == 0:
                print(f"submitted {n_lines}", file=sys.stderr)
        flush(0)
    print(f"{n_passed}/{n_lines} programs passed; results in {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
