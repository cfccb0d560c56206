"""Pieces every trainer shares: optimizer, losses, checkpoints, metrics, model setup, multi-host."""
