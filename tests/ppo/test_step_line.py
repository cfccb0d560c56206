"""The one line each PPO step prints."""
from ledex_jax.ppo.trainer import step_line

METRICS = dict(reward=-4.4, code_reward=-4.4, pass_rate=0.0, kl=0.0, beta=0.2, generate_s=7.7,
               score_s=0.0, scoring_hidden=1.0, stats_s=6.7, train_s=55.2)


def test_a_step_without_scored_explanations_says_none():
    line = step_line(1, dict(METRICS, explanation_reward=float("nan")))
    assert "(code -4.400, explanation none)" in line and "nan" not in line


def test_a_step_with_explanations_shows_their_mean():
    assert "explanation -5.000)" in step_line(2, dict(METRICS, explanation_reward=-5.0))
