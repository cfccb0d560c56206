"""The KL coefficient updates against TRL's AdaptiveKLController arithmetic, written out here."""
import json

import numpy as np
import pytest

from ledex_jax.ppo import kl_control
from ledex_jax.ppo.kl_control import (HORIZON, INIT_KL, TARGET_KL, adaptive_kl_update, fixed_kl_update,
                                      kl_update)


def test_trl_defaults():
    assert (INIT_KL, TARGET_KL, HORIZON) == (0.2, 6.0, 10000)


@pytest.mark.parametrize("current, err", [(6.0, 0.0), (6.6, 0.1), (3.0, -0.2), (0.0, -0.2), (60.0, 0.2),
                                           (5.4, -0.1)])
def test_adaptive_by_hand(current, err):
    got = adaptive_kl_update(0.2, current, 64, 6.0, 10000)
    assert type(got) is float
    assert got == pytest.approx(0.2 * (1 + err * 64 / 10000), rel=1e-12)


def test_adaptive_trajectory_matches_controller():
    rng = np.random.default_rng(0)
    kls = rng.uniform(0, 20, 50)
    value = INIT_KL  # TRL: self.value *= 1 + clip(current / target - 1, -0.2, 0.2) * n_steps / horizon
    beta = INIT_KL
    for current in kls:
        proportional_error = float(np.clip(current / TARGET_KL - 1, -0.2, 0.2))
        value *= 1 + proportional_error * 256 / HORIZON
        beta = kl_update("adaptive", beta, np.float32(current), 256)
        assert beta == pytest.approx(value, rel=1e-6)
    assert json.loads(json.dumps(beta)) == beta  # checkpoints as a plain number


def test_fixed_and_dispatch():
    assert fixed_kl_update(0.3) == 0.3
    assert fixed_kl_update(0.3, 100.0, 64, 6.0, 10000) == 0.3
    assert kl_update("fixed", 0.3, 100.0, 64) == 0.3
    assert kl_update("adaptive", 0.3, 100.0, 64) == pytest.approx(0.3 * (1 + 0.2 * 64 / 10000))
    with pytest.raises(ValueError, match="adaptive"):
        kl_update("linear", 0.3, 1.0, 64)
    assert kl_control.KL_CONTROLS == ("adaptive", "fixed")
