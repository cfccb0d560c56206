"""Serving throughput: our OpenAI server (`scripts/serve.py`, requests batched into the JAX
sampler) vs llama-cpp-python's OpenAI server (`python -m llama_cpp.server`) on the same model,
the embedded SmolLM2-135M-Instruct GGUF (Q4_1; ours dequantises it, by default to bfloat16, the
model's published dtype).

Workload: `--requests` chat completions (short coding prompts, `--max_tokens` new tokens each,
greedy), sent by a closed loop of C client threads (the official `openai` client; each thread
sends its next request when it gets an answer) for each C in `--concurrency`. Figure: completion
tokens (from each response's `usage`) / wall time from the first request to the last answer.

Both servers run side by side for the whole bench (an idle one uses no CPU) and the sides
alternate run by run, so both meet the same machine load. Before its timed runs each side gets
one untimed pass of the same workload at the same concurrency (ours: compiles the programs of the
batch sizes that occur; llama.cpp: loads and touches its weights). llama-cpp-python runs with its
defaults (`n_threads = cpu_count // 2`, `n_threads_batch = cpu_count`, n_ctx 2048, n_batch 512,
one request at a time); `--anchor_args` adds settings, e.g. `--anchor_args=--n_threads=2`.

Ours runs with `--max_batch=64 --dtype=bfloat16` and the default batching waits
(`--batch_wait_ms=250 --batch_gap_ms=50`). The last line is the highest concurrency
(`RESULT serve ...`); lower ones print as `RESULT serve_c<C> ...` before it. Figures move with
the machine's load: read them beside the load averages printed at the start and the end.

    python bench/serve.py                          # ends with: RESULT serve ours=... anchor=... ratio=...
    python bench/serve.py --concurrency=16 --rounds=2
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "embedded:smollm2", "what our server serves (anything scripts/serve.py takes)")
flags.DEFINE_string("gguf", None, "GGUF llama.cpp serves (default: the embedded SmolLM2 file)")
flags.DEFINE_string("dtype", "bfloat16", "our server's dtype")
flags.DEFINE_integer("max_batch", 64, "our server's --max_batch")
flags.DEFINE_float("batch_wait_ms", 250.0, "our server's --batch_wait_ms")
flags.DEFINE_float("batch_gap_ms", 50.0, "our server's --batch_gap_ms")
flags.DEFINE_list("ours_args", [], "extra flags for scripts/serve.py")
flags.DEFINE_list("anchor_args", [], "extra flags for llama_cpp.server (its defaults otherwise)")
flags.DEFINE_integer("requests", 64, "chat requests per timed run")
flags.DEFINE_integer("max_tokens", 128, "max_tokens of every request")
flags.DEFINE_list("concurrency", ["16", "64"], "client threads (closed loop)")
flags.DEFINE_integer("rounds", 1, "timed runs per side per concurrency (the best is reported)")
flags.DEFINE_bool("anchor", True, "also run llama-cpp-python's server")

TASKS = [
    "reverses a string", "checks whether a number is prime", "returns the n-th Fibonacci number",
    "computes the factorial of n", "merges two sorted lists", "counts the vowels in a string",
    "removes duplicates from a list while keeping order", "finds the second largest number in a list",
    "checks whether a string is a palindrome", "flattens a nested list", "computes the GCD of two numbers",
    "converts a binary string to an integer", "returns the transpose of a matrix",
    "finds the longest common prefix of a list of strings", "counts word frequencies in a text",
    "checks whether two strings are anagrams", "rotates a list by k positions", "sums the digits of a number",
    "implements binary search on a sorted list", "returns all subsets of a set",
    "validates balanced parentheses in a string", "converts Celsius to Fahrenheit for a list of values",
    "finds the maximum subarray sum", "capitalizes the first letter of every word",
    "returns the intersection of two lists", "computes the running average of a list",
    "checks whether a year is a leap year", "splits a list into chunks of size n",
    "finds the mode of a list of numbers", "converts a Roman numeral to an integer",
    "computes the dot product of two vectors", "returns the indices of two numbers that add up to a target",
]
STYLES = ["Write a Python function that {}.", "Write a Python function that {}, and explain how it works."]


def prompts(count: int) -> list[str]:
    texts = [s.format(t) for s in STYLES for t in TASKS]
    return [texts[i % len(texts)] for i in range(count)]


class Side:
    """One server under test: its process, base URL and model name."""

    def __init__(self, name: str, cmd: list[str], port: int, env: dict | None = None):
        from ledex_jax.serve.launch import ServerProcess
        self.name, self.base = name, f"http://127.0.0.1:{port}/v1"
        start = time.perf_counter()
        self.process = ServerProcess(cmd, env=env)
        self.process.wait_ready(self.base + "/models", timeout=900)
        self.model = self._model_id()
        print(f"{name}: ready in {time.perf_counter() - start:.1f}s ({' '.join(cmd)})", flush=True)

    def _model_id(self) -> str:
        from openai import OpenAI
        return OpenAI(base_url=self.base, api_key="unused").models.list().data[0].id

    def run(self, texts: list[str], concurrency: int, max_tokens: int) -> dict:
        from openai import OpenAI
        api = OpenAI(base_url=self.base, api_key="unused", max_retries=0, timeout=3600)

        def one(text):
            sent = time.perf_counter()
            out = api.chat.completions.create(model=self.model, messages=[{"role": "user", "content": text}],
                                              max_tokens=max_tokens, temperature=0)
            return out.usage.completion_tokens, time.perf_counter() - sent, out.choices[0].finish_reason

        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(one, texts))
        wall = time.perf_counter() - start
        tokens = sum(r[0] for r in results)
        return {"tok_s": tokens / wall, "tokens": tokens, "wall": wall,
                "p50_latency": statistics.median(r[1] for r in results),
                "length_finishes": sum(r[2] == "length" for r in results)}

    def stop(self):
        self.process.stop()


def main(argv):
    del argv
    import logging
    for name in ("httpx", "httpx2", "openai"):  # one INFO line per request otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    from ledex_jax.models.embedded import smollm2_gguf_path
    from ledex_jax.serve.launch import free_port

    gguf = FLAGS.gguf or str(smollm2_gguf_path())
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    levels = [int(c) for c in FLAGS.concurrency]
    texts = prompts(FLAGS.requests)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs", flush=True)

    sides = []
    try:
        port = free_port()
        env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
        sides.append(Side("ours", [sys.executable, os.path.join(repo, "scripts", "serve.py"), f"--model={FLAGS.model}",
                                   f"--port={port}", f"--max_batch={FLAGS.max_batch}", f"--dtype={FLAGS.dtype}",
                                   f"--batch_wait_ms={FLAGS.batch_wait_ms}", f"--batch_gap_ms={FLAGS.batch_gap_ms}",
                                   *FLAGS.ours_args], port, env))
        if FLAGS.anchor:
            port = free_port()
            sides.append(Side("llama.cpp", [sys.executable, "-m", "llama_cpp.server", "--model", gguf,
                                            "--host", "127.0.0.1", "--port", str(port), *FLAGS.anchor_args], port))
        best: dict = {}
        for c in levels:
            for side in sides:  # untimed pass
                r = side.run(texts, c, FLAGS.max_tokens)
                print(f"  warm-up {side.name} c={c}: {r['tok_s']:.1f} tok/s ({r['wall']:.1f}s)", flush=True)
            for i in range(FLAGS.rounds):
                for side in (sides if i % 2 == 0 else sides[::-1]):
                    r = side.run(texts, c, FLAGS.max_tokens)
                    print(f"  {side.name} c={c} round {i}: {r['tok_s']:.1f} tok/s, {r['tokens']} tokens in "
                          f"{r['wall']:.1f}s, p50 latency {r['p50_latency']:.1f}s, "
                          f"{r['length_finishes']}/{len(texts)} hit max_tokens", flush=True)
                    if r["tok_s"] > best.get((side.name, c), {"tok_s": 0})["tok_s"]:
                        best[(side.name, c)] = r
        stats = _stats(sides[0].base)
    finally:
        for side in sides:
            side.stop()

    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"our engine: {stats}")
    print("\n| concurrency | ours tok/s | llama.cpp tok/s | ratio | ours p50 latency | llama.cpp p50 latency |")
    print("|---|---|---|---|---|---|")
    for c in levels:
        o, a = best[("ours", c)], best.get(("llama.cpp", c))
        anchor = (f"{a['tok_s']:.1f} | {o['tok_s'] / a['tok_s']:.2f}", f"{a['p50_latency']:.1f}s") if a else ("- | -", "-")
        print(f"| {c} | {o['tok_s']:.1f} | {anchor[0]} | {o['p50_latency']:.1f}s | {anchor[1]} |")
    if FLAGS.anchor:
        for c in levels[:-1]:
            o, a = best[("ours", c)]["tok_s"], best[("llama.cpp", c)]["tok_s"]
            print(f"RESULT serve_c{c} ours={o:.1f} anchor={a:.1f} ratio={o / a:.2f}")
        c = levels[-1]
        o, a = best[("ours", c)]["tok_s"], best[("llama.cpp", c)]["tok_s"]
        print(f"RESULT serve ours={o:.1f} anchor={a:.1f} ratio={o / a:.2f}")


def _stats(base: str) -> dict:
    import json
    import urllib.request
    with urllib.request.urlopen(base + "/stats", timeout=30) as r:
        out = json.loads(r.read())
    return {k: out[k] for k in ("generate_calls", "rows", "padded_rows", "rows_per_call", "traces") if k in out}


if __name__ == "__main__":
    app.run(main)
