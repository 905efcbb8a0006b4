"""Synthetic fixtures built offline for tests: tiny random checkpoints and small datasets."""
