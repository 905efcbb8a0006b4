"""The core layer: errors, paths, the results schema and atomic IO.

Everything else builds on this package; it imports nothing else of the project (checked by the
layering contract in pyproject.toml)."""
