"""KV-cache sampling for rollouts, data collection and evaluation.

    sampler = Sampler(model, tokenizer, max_prompt_len=512)
    out = sampler.generate(["def add(a, b):"], max_new_tokens=64, temperature=0.8, top_p=0.95,
                           stop=["\\ndef "], seed=0)
    out.tokens, out.logprobs, out.lengths, out.texts

`processors` holds the token-choice math, `loop` the compiled prefill + decode loop, `stop` the
host-side stop-string logic, `sampler` the host driver.
"""
from ledex_jax.sampling.processors import Mode
from ledex_jax.sampling.sampler import SampleOutput, Sampler, default_buckets

__all__ = ["Sampler", "SampleOutput", "Mode", "default_buckets"]
