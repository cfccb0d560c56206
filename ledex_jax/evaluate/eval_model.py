"""The model under evaluation, named by a ``--model`` spec, as a collection `Teacher`.

Evaluation asks a model the same kind of question the collection asks its teacher (chat turns
in, n answers out, seeded per item), so it reuses those backends: ``openai:MODEL`` is any
OpenAI-compatible endpoint (an API model, or a model we serve), everything else is loaded
locally (``ledex_jax.models.sources``: ``embedded:smollm2``, a Hugging Face directory or hub
name, a .gguf file, an SFT/RL trainer workdir) and answered by the KV-cache sampler.
"""
from __future__ import annotations

import dataclasses

OPENAI_PREFIX = "openai:"


class EvalModelError(ValueError):
    """A ``--model`` spec or model setting that cannot give a model; the message says the fix."""


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """How to reach or load the model (none of these change what a seeded local model answers,
    except ``style``, ``max_prompt_len`` and ``dtype``)."""

    style: str = "chat_template"      # prompt style of a local model: chat_template | starchat
    max_prompt_len: int = 2048        # longest prompt in tokens (a longer one fails its answers)
    max_batch: int = 64               # rows per device call
    dtype: str | None = None          # local parameters' dtype (None: the checkpoint's / float32)
    tokenizer: str | None = None      # where the tokenizer comes from, if not the checkpoint
    mesh_shape: tuple[int, ...] = (1, -1, 1)  # (data, fsdp, tensor) over this host's devices
    base_url: str | None = None       # openai: the endpoint (None: api.openai.com)
    api_key_env: str = "OPENAI_API_KEY"  # openai: the variable holding the key ("" = none needed)
    max_concurrency: int = 8          # openai: requests in flight
    timeout: float = 120.0            # openai: seconds per call
    max_retries: int = 6              # openai: retries of a transient failure


def is_remote(spec: str) -> bool:
    return spec.startswith(OPENAI_PREFIX)


def load_eval_model(spec: str, options: ModelOptions = ModelOptions()):
    """A `Teacher` (``answer(requests) -> replies``, ``close()``) for ``spec``."""
    if not isinstance(spec, str) or not spec.strip():
        raise EvalModelError("--model is empty; name a model: embedded:smollm2, an HF directory or hub "
                             "name, a .gguf file, an SFT/RL workdir, or openai:MODEL")
    if is_remote(spec):
        return _openai_model(spec[len(OPENAI_PREFIX):], options)
    return _local_model(spec, options)


def _openai_model(name: str, options: ModelOptions):
    from ledex_jax.collect.openai_teacher import OpenAITeacher

    if not name:
        raise EvalModelError("--model openai: names no model; write e.g. openai:gpt-3.5-turbo (and "
                             "--base_url for a served model)")
    try:
        return OpenAITeacher(name, base_url=options.base_url, api_key_env=options.api_key_env,
                             max_concurrency=options.max_concurrency, timeout=options.timeout,
                             max_retries=options.max_retries)
    except ValueError as err:  # a missing key variable, a bad setting
        raise EvalModelError(f"--model {OPENAI_PREFIX}{name}: {err}") from None


def _local_model(spec: str, options: ModelOptions):
    from ledex_jax.collect.sampler_teacher import SamplerTeacher
    from ledex_jax.data.prompts import PromptError
    from ledex_jax.models.sources import load_model_and_tokenizer

    from ledex_jax.sharding import local_mesh

    mesh = local_mesh(options.mesh_shape)
    try:
        model, _, tokenizer = load_model_and_tokenizer(spec, options.dtype, options.tokenizer, mesh)
    except (OSError, ValueError) as err:
        raise EvalModelError(f"--model {spec}: {err}") from None
    try:
        return SamplerTeacher(model, tokenizer, name=spec, style=options.style,
                              max_prompt_len=options.max_prompt_len, max_batch=options.max_batch,
                              mesh=mesh)
    except PromptError as err:
        raise EvalModelError(f"--model {spec} with --style {options.style}: {err}") from None
