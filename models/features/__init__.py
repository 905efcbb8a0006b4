"""Representation features of a wrapped MLLM (hidden states), for the representation probes."""
