"""The project's models behind the OpenAI protocol (`scripts/serve.py`).

    sampler = Sampler(model, tokenizer, max_prompt_len=2048)
    engine = Engine(sampler, max_batch=32).start()
    app = create_app(engine, "my-model")          # FastAPI; run with uvicorn

`schemas` parses request bodies and shapes errors, `requests` turns a request into prompt ids
and sampling `Params`, `batching` plans which requests share a generate call, `engine` owns the
sampler on one thread, `responses` writes OpenAI response bodies, `app` wires the routes.
FastAPI is imported only by `app` (the `serve` extra).
"""
from ledex_jax.serve.engine import Choice, Engine, Generation, InvalidRequest, Params

__all__ = ["Engine", "Params", "Generation", "Choice", "InvalidRequest", "create_app"]


def create_app(engine, model_name, **kwargs):
    from ledex_jax.serve.app import create_app as _create
    return _create(engine, model_name, **kwargs)
