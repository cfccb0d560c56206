"""SFT (LeDex §2): `python scripts/train.py --config=configs/sft.py:VARIANT [--config.x=y]`.

Variants: tiny (random tiny Llama, CPU smoke runs), smollm2 (embedded default, SmolLM2-135M-Instruct),
codellama_7b, codellama_13b, starcoder_15b. Paper values: 2 epochs, batch 128, AdamW, lr 2e-5,
500 warm-up steps, cosine decay; sequence length 2048, weight decay 0, bf16 compute are our choices.
"""
from ml_collections import ConfigDict

from ledex_jax.data.sft_pipeline import default_data_config
from ledex_jax.training.config import variant_config


def get_config(arg: str | None = None) -> ConfigDict:
    c = variant_config("sft", arg, "configs/sft.py")
    variant = c.variant

    # The seqio pipeline's fields (ledex_jax/data/sft_pipeline.py: source, path, style, format_rates,
    # pack, overlong, shuffle, ...) plus the trainer's own: seq_len, eval_path, shard_by_host.
    c.data.update(default_data_config())
    c.data.eval_path = ""  # held-out records; "" = the `validation` split of a "{split}" path, or:
    c.data.eval_fraction = 0.1  # share of problems held out of a single data file (0 = train on all)
    c.data.shard_by_host = False  # see ledex_jax/sft/data.py
    c.data.train_path = ""  # a collected DIR/sft.jsonl (scripts/collect.py); "" = data.path / data.source

    c.train.num_epochs = 2
    c.train.batch_size = 128
    c.train.learning_rate = 2e-5
    c.train.warmup_steps = 500
    c.train.schedule = "cosine"

    if variant == "tiny":
        c.model.overrides = {"hidden_size": 64, "num_layers": 2, "max_position_embeddings": 512}
        c.data.seq_len = 512
        c.train.batch_size = 8
        c.train.learning_rate = 3e-3
        c.train.warmup_steps = 10
        c.train.num_epochs = 2
        c.checkpoint.every_steps = 10
        c.log.every_steps = 1
        c.log.eval_every_steps = 10
    elif variant == "smollm2":
        c.data.style = "chat_template"  # an instruct model: use its own chat template
        c.model.overrides = {"remat_policy": "attention"}  # 1.1 GB less per 4 x 512 step, and faster on CPU
        c.data.seq_len = 512
        c.train.batch_size = 16
        c.train.learning_rate = 2e-5
        c.train.warmup_steps = 20
        c.checkpoint.every_steps = 50
        c.log.every_steps = 1
    else:  # 7-15B: FSDP across the slice, bf16 compute, full remat of each layer
        c.model.overrides = {"dtype": "bfloat16", "remat_policy": "full"}
        c.mesh.shape = (1, -1, 1)
    return c
