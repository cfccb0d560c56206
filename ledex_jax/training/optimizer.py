"""AdamW with linear warm-up and cosine (or constant) decay, after global-norm clipping."""
import optax


def learning_rate_schedule(train_cfg, total_steps: int) -> optax.Schedule:
    lr, warmup = train_cfg.learning_rate, train_cfg.warmup_steps
    if train_cfg.schedule == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, max(warmup, 1)), optax.constant_schedule(lr)], [max(warmup, 1)])
    if train_cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=lr, warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1), end_value=lr * train_cfg.end_lr_ratio)
    raise ValueError(f"train.schedule={train_cfg.schedule!r}; choose 'cosine' or 'constant'")


def make_optimizer(train_cfg, total_steps: int) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(train_cfg.max_grad_norm),
        optax.adamw(learning_rate_schedule(train_cfg, total_steps), b1=train_cfg.adam_b1,
                    b2=train_cfg.adam_b2, eps=train_cfg.adam_eps, weight_decay=train_cfg.weight_decay),
    )
