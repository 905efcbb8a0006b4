"""Registers the wrappers with lmms-eval through the `lmms_eval.models` entry-point group."""

from __future__ import annotations


def lmms_eval_manifests() -> list:
    from lmms_eval.models.registry_v2 import ModelManifest

    from models.registry import MODELS

    return [
        ModelManifest(model_id=spec.lmms_name, simple_class_path=spec.lmms_class_path)
        for spec in MODELS.values()
    ]
