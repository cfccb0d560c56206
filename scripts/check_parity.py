"""Checks ledex_jax against transformers (PyTorch, float32) on one checkpoint:
`python scripts/check_parity.py --hf_dir DIR [--prompts=...] [--tolerance=1e-3]`
(or `--gguf FILE`, where the reference is transformers' own reading of the GGUF file).

Prints the largest logit difference over the real tokens of a left-padded batch of prompts and
whether the greedy continuations agree; exits 1 if the difference is past --tolerance or any
continuation differs.
"""
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_PROMPTS = [
    "def fibonacci(n):\n",
    "# Return the sum of the squares of a list of integers\ndef sum_squares(xs):\n",
    "class Stack:\n    def __init__(self):\n",
]

flags.DEFINE_string("hf_dir", None, "Hugging Face checkpoint directory (config.json, safetensors, tokenizer)")
flags.DEFINE_string("gguf", None, "A llama GGUF file instead of --hf_dir")
flags.DEFINE_multi_string("prompts", DEFAULT_PROMPTS, "Prompts (repeat the flag for several)")
flags.DEFINE_float("tolerance", 1e-3, "Largest allowed |logit difference|")
flags.DEFINE_integer("max_new_tokens", 32, "Greedy continuation length to compare")
FLAGS = flags.FLAGS


def _reference(path: str, is_gguf: bool):
    import torch
    from ledex_jax.models import parity

    if is_gguf:
        return parity.hf_model_from_gguf(path)
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def main(argv):
    del argv
    if bool(FLAGS.hf_dir) == bool(FLAGS.gguf):
        raise app.UsageError("give exactly one of --hf_dir and --gguf")
    import numpy as np
    from ledex_jax.models import load_pretrained, parity
    from ledex_jax.models.tokenizer import load_tokenizer

    path = FLAGS.hf_dir or FLAGS.gguf
    model, cfg = load_pretrained(path, dtype="float32")
    tokenizer = load_tokenizer(path)
    reference = _reference(path, is_gguf=bool(FLAGS.gguf))
    pad_id = next(p for p in (cfg.pad_token_id, tokenizer.pad_token_id, 0) if p is not None)
    ids, mask = parity.left_pad([tokenizer(p)["input_ids"] for p in FLAGS.prompts], pad_id)

    diff = parity.max_logit_diff(parity.jax_logits(model, ids, mask), parity.hf_logits(reference, ids, mask), mask)
    ours = parity.jax_greedy(model, ids, mask, FLAGS.max_new_tokens, pad_id)
    theirs = parity.hf_greedy(reference, ids, mask, FLAGS.max_new_tokens, pad_id)
    agree = [bool(np.array_equal(a, b)) for a, b in zip(ours, theirs)]

    print(f"checkpoint: {path} ({cfg.model_type}, {cfg.num_layers} layers)")
    print(f"max |logit difference| over real tokens: {diff:.3e} (tolerance {FLAGS.tolerance:.1e})")
    print(f"greedy decoder: ledex_jax.sampling.Sampler ({model.ops()})")
    for prompt, same, a, b in zip(FLAGS.prompts, agree, ours, theirs):
        print(f"greedy {FLAGS.max_new_tokens} tokens after {prompt[:40]!r}: {'agree' if same else 'DIFFER'}")
        if not same:
            first = int(np.argmax(a != b))
            print(f"  first difference at token {first}: ours {tokenizer.decode(a[:first + 1])!r}, "
                  f"transformers {tokenizer.decode(b[:first + 1])!r}")
    ok = diff <= FLAGS.tolerance and all(agree)
    print("PARITY OK" if ok else "PARITY FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    app.run(main)
