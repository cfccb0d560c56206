"""Training throughput: our compiled SFT step vs transformers + PyTorch AdamW, same model shape and batch.

    python bench/train_step.py [--preset smollm2_135m] [--batch 4] [--seq 512] [--steps 5] [--dtype bfloat16]
                               [--remat attention] [--scan_layers false]

Each framework runs in its own subprocess (so peak RSS is its own); both keep float32 weights and
AdamW state, compute in --dtype (torch: autocast), and take a full causal-LM loss over the batch.
Runs on the default JAX/torch device (CPU here, a GPU where there is one). Prints tokens/s, MFU
(where the chip's peak is known) and peak memory side by side and ends with
`RESULT train_step ours=<tok/s> anchor=<tok/s> ratio=<ours/anchor>`.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def batch_arrays(batch, seq, vocab, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab, (batch, seq)).astype(np.int32)
    return ids


def run_ours(args):
    import jax
    import numpy as np
    import optax
    from ledex_jax.models import build_model, get_preset
    from ledex_jax.sharding import make_mesh
    from ledex_jax.sft.train_step import make_train_step
    from ledex_jax.training.train_state import batch_sharding, create_train_state

    cfg = get_preset(args.preset, remat_policy=args.remat, dtype=args.dtype, scan_layers=args.scan_layers == "true",
                     kernels=args.kernels)
    ids = batch_arrays(args.batch, args.seq, cfg.vocab_size)
    batch = dict(inputs=ids, targets=np.roll(ids, -1, 1), loss_mask=np.ones(ids.shape, np.float32),
                 segment_ids=np.ones(ids.shape, np.int32),
                 positions=np.tile(np.arange(args.seq, dtype=np.int32), (args.batch, 1)))
    mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    opt = optax.adamw(1e-5)
    graphdef, state, shardings = create_train_state(build_model(cfg), opt, mesh)
    step = jax.jit(make_train_step(graphdef, opt, 1), in_shardings=(shardings, batch_sharding(mesh)),
                   out_shardings=(shardings, None), donate_argnums=0)
    t = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        state, m = step(state, batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    peak_mem = jax.devices()[0].memory_stats() or {}
    return compile_s, times, float(m["loss"]), peak_mem.get("peak_bytes_in_use", 0) / 1e9


def run_torch(args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from ledex_jax.models import get_preset

    torch.manual_seed(0)
    c = get_preset(args.preset)
    hf_cfg = LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                         num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                         num_key_value_heads=c.num_kv_heads, max_position_embeddings=c.max_position_embeddings,
                         rope_theta=c.rope_theta, rms_norm_eps=c.norm_eps, tie_word_embeddings=c.tie_word_embeddings,
                         attn_implementation="sdpa")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = LlamaForCausalLM(hf_cfg).float().train().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device == "cuda")
    ids = torch.from_numpy(batch_arrays(args.batch, args.seq, c.vocab_size)).long().to(device)
    amp = torch.autocast(device, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    def step():
        with amp:
            out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(out.loss)  # synchronises

    t = time.perf_counter()
    step()
    first_s = time.perf_counter() - t
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else 0.0
    return first_s, times, loss, peak


def child(args):
    from ledex_jax.models import get_preset, param_count
    from ledex_jax.training.metrics import train_flops_per_token
    compile_s, times, loss, device_mem = (run_ours if args.framework == "ours" else run_torch)(args)
    tokens = args.batch * args.seq
    best = sorted(times)[len(times) // 2]  # median step
    cfg = get_preset(args.preset)
    flops = train_flops_per_token(cfg, args.seq, param_count(cfg)) * tokens / best
    print(json.dumps({"framework": args.framework, "first_step_s": compile_s, "median_step_s": best,
                      "tokens_per_s": tokens / best, "tflops_per_s": flops / 1e12, "loss": loss,
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                      "peak_device_gb": device_mem}))


def peak_flops():
    """The chip's dense bf16 peak, where known (GPU/TPU), from a JAX-free probe of torch or JAX."""
    try:
        import torch
        if torch.cuda.is_available():
            from ledex_jax.training.metrics import PEAK_FLOPS
            name = torch.cuda.get_device_name()
            return next((v for k, v in PEAK_FLOPS.items() if name.startswith(k)), None)
    except ImportError:
        pass
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="smollm2_135m")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--remat", default="attention")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--scan_layers", default="true", choices=["true", "false"],
                   help="false: unrolled layers (ModelConfig.scan_layers; faster for bf16 on CPU)")
    p.add_argument("--kernels", default="auto", help="our implementation choice (ModelConfig.kernels)")
    p.add_argument("--framework", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.framework:
        return child(args)
    results = {}
    for fw in ("ours", "torch"):
        cmd = [sys.executable, __file__, "--framework", fw, "--preset", args.preset, "--batch", str(args.batch),
               "--seq", str(args.seq), "--steps", str(args.steps), "--remat", args.remat, "--dtype", args.dtype,
               "--scan_layers", args.scan_layers, "--kernels", args.kernels]
        env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
        results[fw] = json.loads(out.strip().splitlines()[-1])
    print(f"{args.preset}, batch {args.batch} x {args.seq} tokens, {args.dtype} compute, float32 AdamW, "
          f"remat {args.remat}, scan_layers {args.scan_layers}, load {os.getloadavg()[0]:.2f}")
    peak = peak_flops()
    print(f"{'':24}{'ledex_jax':>14}{'torch+HF':>14}")
    for key, fmt in (("tokens_per_s", "{:14.1f}"), ("tflops_per_s", "{:14.2f}"), ("median_step_s", "{:14.3f}"),
                     ("first_step_s", "{:14.2f}"), ("peak_rss_gb", "{:14.2f}"), ("peak_device_gb", "{:14.2f}"),
                     ("loss", "{:14.4f}")):
        print(f"{key:24}" + fmt.format(results["ours"][key]) + fmt.format(results["torch"][key]))
    if peak:
        print(f"{'mfu':24}" + "".join(f"{results[fw]['tflops_per_s'] * 1e12 / peak:14.3f}" for fw in ("ours", "torch")))
    ours, anchor = results["ours"]["tokens_per_s"], results["torch"]["tokens_per_s"]
    name = "train_step" if args.dtype == "float32" else f"train_step_{args.dtype}"
    print(f"RESULT {name} ours={ours:.1f} anchor={anchor:.1f} ratio={ours / anchor:.2f}")


if __name__ == "__main__":
    main()
