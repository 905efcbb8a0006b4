"""fgvr-harness: fine-grained visual recognition benchmarks for multimodal LLMs on lmms-eval."""

__version__ = "0.1.0"
