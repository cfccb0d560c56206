"""Exports a training checkpoint to a Hugging Face directory:
`python scripts/export_hf.py --checkpoint runs/sft-tiny --out exported/sft-tiny`."""
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

flags.DEFINE_string("checkpoint", None, "A workdir, its checkpoints/ folder, or one step folder", required=True)
flags.DEFINE_string("out", None, "Output directory (must not exist or be empty, unless --overwrite)", required=True)
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest)")
flags.DEFINE_string("tokenizer", None, "Tokenizer to save with it (default: the one recorded in the checkpoint)")
flags.DEFINE_string("max_shard_size", "2GB", "Largest safetensors shard")
flags.DEFINE_bool("overwrite", False, "Replace an existing non-empty --out")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from ledex_jax.training.export import export_checkpoint
    out = export_checkpoint(FLAGS.checkpoint, FLAGS.out, step=FLAGS.step, tokenizer_path=FLAGS.tokenizer,
                            max_shard_size=FLAGS.max_shard_size, overwrite=FLAGS.overwrite)
    print(f"exported to {out}")


if __name__ == "__main__":
    app.run(main)
