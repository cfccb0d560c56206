"""Token losses as (sum, count) pairs, so micro-batching and accumulation stay exact."""
import jax.numpy as jnp


def masked_nll(log_probs, loss_mask):
    """(sum of -log p over masked tokens, number of masked tokens), from the targets' log-probs
    [B, T] (`DecoderLM.target_log_probs`)."""
    mask = loss_mask.astype(jnp.float32)
    return -jnp.sum(log_probs * mask), jnp.sum(mask)
