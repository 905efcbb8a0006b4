"""FGVR tasks: dataset readers, option building, question preparation and lmms-eval task templates."""
