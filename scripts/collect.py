"""LeDex data collection: `python scripts/collect.py --config=configs/collect.py:demo --workdir=DIR`.

Stages (`--stage`): sample, execute, teach, verify, export, or all (default). A killed run
resumes with the same command; on a pod the same command runs on every host (set
--config.distributed.initialize=True): each process takes its own share of the problems and
process 0 exports. `--stage verify` on an exported directory re-runs every kept solution.
"""
import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

config_flags.DEFINE_config_file("config", None, "Collection config, e.g. configs/collect.py:demo", lock_config=True)
flags.DEFINE_string("workdir", None, "Where the collection lives (stage records, sft.jsonl, rl.jsonl, stats.json)")
flags.DEFINE_enum("stage", "all", ["sample", "execute", "teach", "verify", "export", "all"], "Stage(s) to run")
flags.DEFINE_bool("progress", True, "Show progress bars")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    std_logging.getLogger("ledex_jax.collect").setLevel(std_logging.INFO)
    cfg = FLAGS.config
    if cfg is None or not FLAGS.workdir:
        raise app.UsageError("--config and --workdir are required, e.g. --config=configs/collect.py:demo "
                             "--workdir=runs/collect-demo")
    import jax

    from ledex_jax.collect.pipeline import Collection, CollectionError
    from ledex_jax.collect.store import ManifestMismatch
    from ledex_jax.data.benchmarks import BenchmarkDataError
    from ledex_jax.training.distributed import maybe_initialize

    maybe_initialize(cfg.distributed)
    try:
        collection = Collection(cfg, FLAGS.workdir, jax.process_index(), jax.process_count(),
                                progress=FLAGS.progress)
        collection.run(FLAGS.stage)
    except (CollectionError, ManifestMismatch, BenchmarkDataError) as err:
        print(f"collect: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
