"""Tiny random checkpoints of real multimodal architectures, built offline for tests."""
