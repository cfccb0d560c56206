"""Data: benchmark loaders, prompts and training-data pipelines. Kept import-light (no JAX)."""
