"""LLM backends (a local transformers model, an OpenAI-compatible server) that write descriptions,
attributes and questions for the probes and the training-data builder."""
