"""Token losses as (sum, count) pairs, so micro-batching and accumulation stay exact."""
import jax
import jax.numpy as jnp


def token_log_probs(logits, targets):
    """log p(target) per position, float32. logits [B,T,V], targets [B,T]."""
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)


def masked_nll(logits, targets, loss_mask):
    """(sum of -log p over masked tokens, number of masked tokens)."""
    nll = -token_log_probs(logits, targets)
    mask = loss_mask.astype(jnp.float32)
    return jnp.sum(nll * mask), jnp.sum(mask)
