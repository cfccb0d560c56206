"""The KL coefficient β as plain functions on floats, so it checkpoints as a number. Semantics of
TRL v0.8.6's AdaptiveKLController (Ziegler et al. 2019) and FixedKLController; TRL calls the update
once per PPO step with the batch's mean per-sequence KL and n_steps = the global batch size."""
from __future__ import annotations

INIT_KL = 0.2
TARGET_KL = 6.0
HORIZON = 10000
KL_CONTROLS = ("adaptive", "fixed")


def adaptive_kl_update(beta, current_kl, n_steps, target, horizon):
    """β·(1 + clip(current/target − 1, −0.2, 0.2)·n_steps/horizon)."""
    err = min(max(float(current_kl) / float(target) - 1.0, -0.2), 0.2)
    return float(beta) * (1.0 + err * float(n_steps) / float(horizon))


def fixed_kl_update(beta, *_):
    """β unchanged."""
    return float(beta)


def kl_update(kind, beta, current_kl, n_steps, target=TARGET_KL, horizon=HORIZON):
    """The next β for kind "adaptive" or "fixed"."""
    if kind == "adaptive":
        return adaptive_kl_update(beta, current_kl, n_steps, target, horizon)
    if kind == "fixed":
        return fixed_kl_update(beta, current_kl, n_steps, target, horizon)
    raise ValueError(f"unknown KL control {kind!r}; choose one of {', '.join(KL_CONTROLS)}")
