"""The dtype names a model loads in: `--model-args dtype=NAME` (or `auto`) and the training configs'
`model.dtype`. Named here once, without importing torch, so the registry's argument check, the
wrappers and the training configs read the same list."""

DTYPES = ("float32", "bfloat16", "float16")  # each a torch attribute: getattr(torch, name)
