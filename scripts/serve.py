"""Serve a checkpoint behind the OpenAI protocol (/v1/models, /v1/completions, /v1/chat/completions).

    python scripts/serve.py --model=embedded:smollm2
    python scripts/serve.py --model=path/to/hf_dir --port=8000 --max_batch=64 --dtype=bfloat16
    python scripts/serve.py --model=workdir/sft_run --tokenizer=embedded:smollm2 --port=0

--model takes anything `ledex_jax.models.sources.load_model_and_tokenizer` does (embedded:smollm2,
an HF directory or hub name, a .gguf file, an SFT/RL trainer workdir). Concurrent requests are
batched into the JAX sampler (ledex_jax/serve/engine.py). When the socket is bound the script
prints one line `READY http://HOST:PORT/v1 model=NAME` (with --port=0, the port the OS chose).
Then use any OpenAI client: OpenAI(base_url="http://HOST:PORT/v1", api_key="unused").
"""
from __future__ import annotations

import os
import sys
import threading
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "embedded:smollm2, an HF directory or hub name, a .gguf file or a trainer workdir")
flags.DEFINE_string("served_model_name", None, "model name at /v1/models and in requests (default: --model)")
flags.DEFINE_string("tokenizer", None, "where the tokenizer comes from, if not from --model")
flags.DEFINE_string("dtype", None, "parameter/compute dtype, e.g. bfloat16 (default: the checkpoint loader's)")
flags.DEFINE_string("host", "127.0.0.1", "address to bind")
flags.DEFINE_integer("port", 8000, "port to bind (0: any free port, printed in the READY line)")
flags.DEFINE_integer("max_batch", 32, "most rows (choices) per device call; calls are padded to a power of two")
flags.DEFINE_integer("max_prompt_len", 2048, "longest prompt in tokens (capped by the model's context)")
flags.DEFINE_integer("max_tokens_limit", 2048, "largest max_tokens a request may ask for")
flags.DEFINE_integer("default_max_tokens", 512, "max_tokens of a chat request that gives none")
flags.DEFINE_float("batch_wait_ms", 250.0, "the longest a call that is not full waits for more requests "
                   "(from the previous call's end)")
flags.DEFINE_float("batch_gap_ms", 50.0, "...but it stops waiting once no request came for this long")
flags.DEFINE_bool("warmup", False, "compile every batch size before serving (greedy, for the lengths below)")
flags.DEFINE_list("warmup_prompt_tokens", ["48", "64"], "prompt lengths the warm-up compiles for")
flags.DEFINE_integer("warmup_max_tokens", 128, "max_tokens the warm-up compiles for")
flags.DEFINE_string("kernels", None, "the sampler's implementation choice (ModelConfig.kernels values)")
flags.DEFINE_string("log_level", "warning", "uvicorn log level")
flags.mark_flag_as_required("model")


def build_engine():
    from ledex_jax.models.sources import load_model_and_tokenizer
    from ledex_jax.sampling import Sampler
    from ledex_jax.serve import Engine

    model, config, tokenizer = load_model_and_tokenizer(FLAGS.model, FLAGS.dtype, FLAGS.tokenizer)
    max_prompt_len = min(FLAGS.max_prompt_len, config.max_position_embeddings - 1)
    sampler = Sampler(model, tokenizer, max_prompt_len=max_prompt_len, max_batch=FLAGS.max_batch,
                      kernels=FLAGS.kernels)
    engine = Engine(sampler, max_batch=FLAGS.max_batch, max_tokens_limit=FLAGS.max_tokens_limit,
                    batch_wait_s=FLAGS.batch_wait_ms / 1000, batch_gap_s=FLAGS.batch_gap_ms / 1000)
    if FLAGS.warmup:
        start = time.perf_counter()
        engine.warmup([min(int(n), max_prompt_len) for n in FLAGS.warmup_prompt_tokens], FLAGS.warmup_max_tokens)
        print(f"warm-up compiled in {time.perf_counter() - start:.1f}s", flush=True)
    return engine.start()


def announce_when_bound(server, name: str):
    """Prints the READY line once uvicorn has bound its socket (the real port for --port=0)."""
    def wait():
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.05)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        print(f"READY http://{host}:{port}/v1 model={name}", flush=True)
    threading.Thread(target=wait, daemon=True).start()


def main(argv):
    del argv
    import uvicorn

    from ledex_jax.serve import create_app

    if FLAGS.max_batch < 1:
        raise app.UsageError(f"--max_batch={FLAGS.max_batch} must be >= 1")
    name = FLAGS.served_model_name or FLAGS.model
    engine = build_engine()
    api = create_app(engine, name, default_max_tokens=FLAGS.default_max_tokens)
    server = uvicorn.Server(uvicorn.Config(api, host=FLAGS.host, port=FLAGS.port, log_level=FLAGS.log_level))
    announce_when_bound(server, name)
    try:
        server.run()
    finally:
        engine.stop(timeout=5)


if __name__ == "__main__":
    app.run(main)
