"""Fields every trainer config shares (model, tokenizer, mesh, checkpoints, logging, multi-host),
so configs/sft.py and configs/rl.py only state what is specific to their stage."""
from ml_collections import ConfigDict

from ledex_jax.sharding import DEFAULT_RULES


MODEL_VARIANTS = {
    # name: (model preset, checkpoint, tokenizer); for RL the checkpoint is the SFT model
    "tiny": dict(preset="tiny_llama", checkpoint="", tokenizer="embedded:smollm2"),
    "smollm2": dict(preset="smollm2_135m", checkpoint="embedded:smollm2", tokenizer=""),
    "codellama_7b": dict(preset="codellama_7b", checkpoint="codellama/CodeLlama-7b-hf", tokenizer=""),
    "codellama_13b": dict(preset="codellama_13b", checkpoint="codellama/CodeLlama-13b-hf", tokenizer=""),
    "starcoder_15b": dict(preset="starcoder_15b", checkpoint="bigcode/starcoder", tokenizer=""),
}


def variant_config(trainer: str, arg: str | None, config_file: str) -> ConfigDict:
    """base_config for `configs/<file>.py:VARIANT` (default smollm2), with `variant` recorded."""
    variant = arg or "smollm2"
    if variant not in MODEL_VARIANTS:
        raise ValueError(f"{config_file}: unknown variant {variant!r}; choose one of {', '.join(MODEL_VARIANTS)}")
    c = base_config(trainer=trainer, **MODEL_VARIANTS[variant])
    c.variant = variant
    return c


def base_config(trainer: str, preset: str, checkpoint: str, tokenizer: str) -> ConfigDict:
    c = ConfigDict()
    c.trainer = trainer
    c.seed = 0

    c.model = ConfigDict()
    c.model.preset = preset  # architecture preset (ledex_jax.models.presets)
    c.model.checkpoint = checkpoint  # HF dir / hub name / .gguf / "embedded:smollm2"; "" = random init
    c.model.overrides = {}  # ModelConfig fields, e.g. {"dtype": "bfloat16", "remat_policy": "full"}
    c.model.kernels = "auto"  # implementation choice: auto | xla | pallas | cudnn | cpu (ledex_jax/ops/choice.py)
    c.tokenizer = tokenizer  # "" = the checkpoint's tokenizer

    c.data = ConfigDict()
    c.data.seq_len = 2048

    c.train = ConfigDict()
    c.train.num_epochs = 1
    c.train.num_steps = -1  # -1: derived from epochs x dataset size / batch
    c.train.batch_size = 64  # global, in examples (packed rows when packing)
    c.train.grad_accum_steps = 1
    c.train.learning_rate = 1e-5
    c.train.warmup_steps = 0
    c.train.schedule = "cosine"  # "cosine" | "constant"
    c.train.end_lr_ratio = 0.0
    c.train.weight_decay = 0.0
    c.train.adam_b1 = 0.9
    c.train.adam_b2 = 0.999
    c.train.adam_eps = 1e-8
    c.train.max_grad_norm = 1.0

    c.mesh = ConfigDict()
    c.mesh.shape = (1, -1, 1)  # (data, fsdp, tensor); one -1 takes the remaining devices
    c.mesh.rules = DEFAULT_RULES

    c.checkpoint = ConfigDict()
    c.checkpoint.every_steps = 500
    c.checkpoint.keep = 3
    c.checkpoint.async_save = True
    c.checkpoint.restore_step = -1  # -1: the latest checkpoint in <workdir>/checkpoints

    c.log = ConfigDict()
    c.log.every_steps = 10
    c.log.eval_every_steps = 500
    c.log.eval_batches = 4
    c.log.peak_flops_per_device = 0.0  # 0: look up by device kind (for MFU)

    c.distributed = ConfigDict()
    c.distributed.initialize = False  # True on TPU pods / multi-host GPU (jax.distributed.initialize())
    c.distributed.coordinator_address = ""  # explicit "host:port" for non-TPU clusters
    c.distributed.num_processes = 0
    c.distributed.process_id = -1
    return c
