"""`make demo`: PPO with LeDex's rewards on this machine's CPU, then the policy in Hugging Face format.

The embedded SmolLM2-135M-Instruct answers the bundled demo problems' wrong code in LeDex's two
formats (fix; explain then fix); every answer is run against the problem's tests in the sandboxed
execution pool and scored with CodeBLEU and sentence-embedding similarity to the verified fixes and
explanations; a few PPO steps follow, and the trained policy is exported.

    python scripts/demo.py --steps=3 --workdir=runs/demo
"""
from __future__ import annotations

import os
import shutil
import sys
import time

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 3, "PPO steps")
flags.DEFINE_string("workdir", "runs/demo", "checkpoints, metrics.jsonl, TensorBoard logs and the export go here "
                    "(a previous demo run there is replaced)")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from configs.rl import get_config
    from ledex_jax.ppo.trainer import train
    from ledex_jax.training.export import export_checkpoint

    cfg = get_config("smollm2")
    cfg.train.num_steps = FLAGS.steps
    cfg.checkpoint.every_steps = FLAGS.steps
    workdir = os.path.abspath(FLAGS.workdir)
    if os.path.isdir(workdir) and os.path.isfile(os.path.join(workdir, "demo.stamp")):
        shutil.rmtree(workdir)  # only a directory this demo made itself
    elif os.path.exists(workdir) and os.listdir(workdir):
        raise app.UsageError(f"{workdir} exists and was not made by the demo; pass --workdir=<new directory>")
    os.makedirs(workdir, exist_ok=True)
    open(os.path.join(workdir, "demo.stamp"), "w").close()
    print(f"PPO on {cfg.model.checkpoint}: {FLAGS.steps} steps of {cfg.train.batch_size} responses "
          f"(formats {cfg.rollout.formats}), workdir {workdir}")
    start = time.perf_counter()
    result = train(cfg, workdir)
    print(f"trained {result['step']} steps in {time.perf_counter() - start:.0f}s; metrics in {workdir}/metrics.jsonl")
    out = export_checkpoint(workdir, os.path.join(workdir, "hf"))
    print(f"exported the policy (value head left out) to {out}: load it with "
          f"transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})")


if __name__ == "__main__":
    app.run(main)
