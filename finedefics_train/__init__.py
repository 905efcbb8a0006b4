"""The Finedefics training pipeline (attribute descriptions, CLIP hard negatives, two-stage QLoRA).

Not implemented yet: this package reserves the top-level folder the design fixes. Trained
adapters and merged checkpoints are evaluated through the `finedefics` model of `models/`.
"""
