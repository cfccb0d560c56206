"""Evaluation: pass@k and scoring of sampled programs against benchmarks. Imports no JAX."""
