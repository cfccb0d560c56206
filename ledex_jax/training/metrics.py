"""Training metrics: TensorBoard (clu metric writers), one JSON object per logged step in
`<workdir>/metrics.jsonl`, and the MFU estimate."""
from __future__ import annotations

import json
import os
from pathlib import Path

import jax

# Dense bf16 peak FLOP/s per chip, for MFU. Override with config.log.peak_flops_per_device.
PEAK_FLOPS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
              "TPU v6 lite": 918e12, "TPU v6e": 918e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
              "NVIDIA A100": 312e12}


def peak_flops_per_device(override: float = 0.0) -> float | None:
    if override:
        return override
    kind = jax.devices()[0].device_kind
    for prefix, flops in PEAK_FLOPS.items():
        if kind.startswith(prefix):
            return flops
    return None


def train_flops_per_token(model_cfg, seq_len: int, num_params: int) -> float:
    """6N for the matmuls (forward + backward) plus causal attention scores, as in PaLM/MaxText."""
    attention = 6 * model_cfg.num_layers * model_cfg.num_heads * model_cfg.dim_per_head * seq_len
    return 6 * num_params + attention


class MetricsLogger:
    """Writes scalars on process 0. On resume, drops lines past the restored step so the trace
    of a resumed run is identical to an uninterrupted one."""

    def __init__(self, workdir: str | os.PathLike, resume_step: int = 0):
        self.enabled = jax.process_index() == 0
        self.path = Path(workdir) / "metrics.jsonl"
        self._writer = None
        if not self.enabled:
            return
        from clu import metric_writers  # imports TF: only where metrics are written
        self._writer = metric_writers.create_default_writer(str(Path(workdir) / "tensorboard"), asynchronous=True)
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= resume_step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            tmp.replace(self.path)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        scalars = {k: float(v) for k, v in scalars.items()}
        self._writer.write_scalars(step, scalars)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
