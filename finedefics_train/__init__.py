"""The Finedefics training pipeline (He et al., ICLR 2025): training data (train splits, attribute
descriptions, CLIP hard negatives, Stage I triples and Stage II instructions) in `finedefics_train.data`,
and the two-stage QLoRA training (losses, recipes, configs, trainer glue). Trained adapters and merged
checkpoints are evaluated through the `finedefics` model of `models/`.
"""
