"""Readers for the six FGVR test sets in their original archive layouts (and HF mirrors)."""
