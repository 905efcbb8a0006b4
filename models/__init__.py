"""lmms-eval model wrappers for FGVR evaluation (one base class, thin per-model files) and their registry."""
