"""Runs the trainer a config names: `python scripts/train.py --config=configs/sft.py:tiny --workdir=DIR`.

The same command runs on every host of a TPU pod (set --config.distributed.initialize=True).
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

config_flags.DEFINE_config_file("config", None, "Trainer config file, e.g. configs/sft.py:tiny", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics.jsonl and TensorBoard logs go "
                    "(default: runs/<trainer>-<variant>)")
FLAGS = flags.FLAGS

TRAINERS = {
    "sft": "ledex_jax.sft.trainer",
    "ppo": "ledex_jax.ppo.trainer",
}


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:  # orbax and seqio log every file at INFO; --verbosity=0 shows them
        logging.set_verbosity(logging.WARNING)
    cfg = FLAGS.config
    if cfg is None:
        raise app.UsageError("--config is required, e.g. --config=configs/sft.py:tiny")
    if cfg.trainer not in TRAINERS:
        raise app.UsageError(f"config.trainer={cfg.trainer!r}; known trainers: {', '.join(TRAINERS)}")
    workdir = FLAGS.workdir or os.path.join("runs", f"{cfg.trainer}-{cfg.get('variant', 'custom')}")
    import importlib
    trainer = importlib.import_module(TRAINERS[cfg.trainer])
    result = trainer.train(cfg, workdir)
    print(f"done: {result}")


if __name__ == "__main__":
    app.run(main)
