"""`create_app(engine, model_name)`: the FastAPI app of the OpenAI endpoints.

    GET  /v1/models, /v1/models/{id}
    POST /v1/completions, /v1/chat/completions   (stream=true supported, see responses.py)
    GET  /v1/stats    engine counters (generate calls, rows per call, compiles); not OpenAI
    GET  /health

Every error is OpenAI-shaped JSON (`{"error": {message, type, param, code}}`): 400 for a bad
body, 404 for an unknown model or route, 500 when a generate call failed (only the requests of
that call; the engine keeps serving).
"""
from __future__ import annotations

import asyncio
import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledex_jax.serve import requests as R
from ledex_jax.serve import responses
from ledex_jax.serve.engine import Engine, InvalidRequest
from ledex_jax.serve.schemas import APIError, ChatRequest, CompletionRequest, error_body

log = logging.getLogger("ledex_jax.serve")


def create_app(engine: Engine, model_name: str, default_max_tokens: int = 512) -> FastAPI:
    """The app serving `engine` (started by the caller) as model `model_name`.

    default_max_tokens: a chat request's max_tokens when it gives none (bounded by the context).
    """
    app = FastAPI(title="ledex-jax OpenAI-compatible server")
    tokenizer = engine.sampler.tokenizer
    if tokenizer is None:
        raise ValueError("create_app: the engine's Sampler has no tokenizer; build it with Sampler(model, tokenizer)")
    eos_ids = engine.eos_ids
    created = int(time.time())
    _install_error_handlers(app)

    def check_model(name: str):
        if name != model_name:
            raise APIError(404, f"The model '{name}' does not exist; this server serves '{model_name}'",
                           param="model", code="model_not_found")

    async def generate(inputs: R.Inputs, prompt_param: str):
        try:
            futures = [engine.submit(p, inputs.params) for p in inputs.prompts]
        except InvalidRequest as exc:
            raise APIError(400, str(exc), param=prompt_param if exc.param == "prompt" else exc.param,
                           code="invalid_value") from exc
        try:
            return await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        except asyncio.CancelledError:
            for f in futures:
                f.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - a failed generate call: 500 for its requests only
            log.exception("generate call failed")
            raise APIError(500, f"generation failed: {type(exc).__name__}: {exc}", code="generation_failed") from exc

    def reply(body: dict, chat: bool, stream: bool, stream_options):
        if not stream:
            return JSONResponse(body)
        include_usage = bool((stream_options or {}).get("include_usage"))
        return StreamingResponse(responses.stream_events(body, chat, include_usage), media_type="text/event-stream")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(model_name, created)]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str):
        check_model(name)
        return _model_card(model_name, created)

    @app.get("/v1/stats")
    async def stats():
        return engine.stats()

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        check_model(req.model)
        inputs = R.completion_inputs(req, tokenizer)
        generations = await generate(inputs, "prompt")
        body = responses.completion_body(model_name, generations, inputs.logprobs, tokenizer, eos_ids)
        return reply(body, False, req.stream, req.stream_options)

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        check_model(req.model)
        inputs = R.chat_inputs(req, tokenizer, default_max_tokens, engine.context)
        (generation,) = await generate(inputs, "messages")
        body = responses.chat_body(model_name, generation, inputs.logprobs, tokenizer, eos_ids)
        return reply(body, True, req.stream, req.stream_options)

    return app


def _model_card(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "ledex-jax"}


def _install_error_handlers(app: FastAPI):
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            param, message = None, f"the request body is not valid JSON: {first.get('msg', '')}"
        elif first.get("type") == "missing":
            message = f"missing required field '{param}'"
        else:
            message = f"invalid value for '{param}': {first.get('msg', 'invalid')}" if param else str(first.get("msg"))
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem(s))"
        return JSONResponse(error_body(message, param=param, code=first.get("type")), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(error_body(str(exc.detail), param=None, code=code), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        log.exception("unhandled error")
        return JSONResponse(error_body(f"internal server error: {type(exc).__name__}: {exc}", "server_error"),
                            status_code=500)
