"""Runs the self-debug scenario of self_debug_fakes.py in WORKDIR, logging requests to LOG (for
the kill-and-resume test): ``python self_debug_run.py WORKDIR LOG``; SELF_DEBUG_DELAY slows the
scripted model down so the run can be killed midway."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", ".."))

from executors import ExecutionPool  # noqa: E402
from ledex_jax.evaluate.self_debug import SelfDebugEval  # noqa: E402
from self_debug_fakes import scenario  # noqa: E402

if __name__ == "__main__":
    workdir, log = sys.argv[1:3]
    benchmarks, model, settings = scenario(delay=float(os.environ.get("SELF_DEBUG_DELAY", "0")), log_path=log)
    with ExecutionPool(workers=2, cache_size=0, allow_unsandboxed=True) as pool:
        SelfDebugEval(benchmarks, settings, workdir, model_spec="scripted").run(model, pool, progress=False)
