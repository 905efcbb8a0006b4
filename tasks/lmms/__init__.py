"""lmms-eval task templates (YAML) and the hooks they call."""
