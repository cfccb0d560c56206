"""Sample completions from a checkpoint (HF directory or .gguf; default: the embedded SmolLM2).

    python scripts/generate.py --prompt="def fib(n):" --max_new_tokens=64 --greedy
    python scripts/generate.py --chat --prompt="Write a Python function that reverses a string."
    python scripts/generate.py --prompts_file=prompts.txt --temperature=0.8 --top_p=0.95 --n=4
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "HF checkpoint directory or .gguf file (default: embedded SmolLM2-135M-Instruct)")
flags.DEFINE_multi_string("prompt", [], "a prompt (repeatable)")
flags.DEFINE_string("prompts_file", None, ".txt (prompts separated by blank lines) or .jsonl with a 'prompt' field")
flags.DEFINE_bool("chat", False, "wrap each prompt as a user turn with the tokenizer's chat template")
flags.DEFINE_integer("max_new_tokens", 128, "tokens to generate per prompt")
flags.DEFINE_float("temperature", 1.0, "0 = greedy")
flags.DEFINE_float("top_p", 1.0, "nucleus sampling mass")
flags.DEFINE_integer("top_k", 0, "0 = no top-k")
flags.DEFINE_bool("greedy", False, "argmax decoding")
flags.DEFINE_multi_string("stop", [], "stop string (repeatable)")
flags.DEFINE_integer("n", 1, "samples per prompt")
flags.DEFINE_integer("seed", 0, "sampling seed")
flags.DEFINE_integer("max_prompt_len", 1024, "longest prompt in tokens")
flags.DEFINE_integer("max_batch", 16, "prompts per device call")
flags.DEFINE_string("dtype", None, "parameter/compute dtype (default float32)")


def read_prompts(path: str) -> list[str]:
    text = Path(path).read_text()
    if path.endswith(".jsonl"):
        return [json.loads(line)["prompt"] for line in text.splitlines() if line.strip()]
    return [p.strip("\n") for p in text.split("\n\n") if p.strip()]


def main(argv):
    del argv
    from ledex_jax.models import load_pretrained
    from ledex_jax.models.embedded import smollm2_gguf_path
    from ledex_jax.models.tokenizer import load_tokenizer
    from ledex_jax.sampling import Sampler

    prompts = list(FLAGS.prompt) + (read_prompts(FLAGS.prompts_file) if FLAGS.prompts_file else [])
    if not prompts:
        raise app.UsageError("give --prompt (repeatable) or --prompts_file")
    path = FLAGS.model or str(smollm2_gguf_path())
    model, _ = load_pretrained(path, dtype=FLAGS.dtype)
    tokenizer = load_tokenizer(path)
    if FLAGS.chat:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in prompts]
        ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    else:
        ids = [tokenizer.encode(p) for p in prompts]
    sampler = Sampler(model, tokenizer, max_prompt_len=FLAGS.max_prompt_len, max_batch=FLAGS.max_batch)
    start = time.perf_counter()
    out = sampler.generate([i for i in ids for _ in range(FLAGS.n)], FLAGS.max_new_tokens,
                           temperature=FLAGS.temperature, top_p=FLAGS.top_p, top_k=FLAGS.top_k,
                           greedy=FLAGS.greedy, stop=FLAGS.stop, seed=FLAGS.seed)
    seconds = time.perf_counter() - start
    for i, text in enumerate(out.texts):
        print(f"=== prompt {i // FLAGS.n} sample {i % FLAGS.n} ({out.lengths[i]} tokens"
              f"{', stopped' if out.stopped[i] else ''}) ===")
        print(prompts[i // FLAGS.n] + text if not FLAGS.chat else text)
    print(f"--- {int(out.lengths.sum())} tokens in {seconds:.1f}s (including compilation)")


if __name__ == "__main__":
    app.run(main)
