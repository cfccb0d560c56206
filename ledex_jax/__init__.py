"""ledex-jax: LeDex (explain-and-refine training for code LLMs) in JAX/Flax NNX."""

__version__ = "0.1.0"
