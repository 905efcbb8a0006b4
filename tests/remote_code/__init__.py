"""Stand-in checkpoints of the remote-code models and their builder (build.py)."""
