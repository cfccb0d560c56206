"""Puts several evaluated runs (prompting / SFT / RL) in one table and one plot each:

  python scripts/compare.py runs/prompt runs/sft runs/rl/results.json --out runs/compare
  python scripts/compare.py runs/sft runs/rl --out cmp --round 2 --labels "SFT,RL"

Each argument is a run folder the evaluation wrote (with its results.json) or the file itself.
Writes comparison.md, compare_pass_at_1_by_round.png and compare_success_rate.png into --out.
Runs sampled with different settings (n, temperature, ...) or on different problems are refused
unless --force.
"""
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

flags.DEFINE_string("out", None, "Folder for the comparison (created if missing; files of the "
                    "same names that the report did not write are never replaced)", required=True)
flags.DEFINE_integer("round", 1, "Refinement round shown in the tables and the success plot "
                     "(1, as the paper's Table 2)")
flags.DEFINE_list("labels", None, "One label per run, in order (default: each run's own label)")
flags.DEFINE_bool("force", False, "Compare runs whose settings differ; the report lists the "
                  "differences")
FLAGS = flags.FLAGS


def main(argv):
    from ledex_jax.evaluate.compare import load_runs, write_comparison
    from ledex_jax.evaluate.report import ResultsError

    paths = argv[1:]
    if len(paths) < 2:
        raise app.UsageError("give at least two runs: run folders or their results.json files")
    try:
        runs = load_runs(paths, FLAGS.labels)
        written = write_comparison(runs, FLAGS.out, round=FLAGS.round, force=FLAGS.force)
    except (ResultsError, ValueError, FileExistsError, NotADirectoryError, ImportError) as err:
        raise app.UsageError(str(err))
    for path in written.values():
        print(path)


if __name__ == "__main__":
    app.run(main)
