"""Hand-written kernels for what XLA does not do well on a given backend (see each module)."""
