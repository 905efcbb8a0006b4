"""Finedefics training data (He et al., ICLR 2025, §3.1-3.2): the six datasets' train splits, checked
against their test splits for leakage, turned into attribute descriptions (an LLM discovers the useful
attributes of each super-category, an MLLM describes each of them per image, an LLM summarises them
into a description that does not name the class; or CUB's human attribute annotations; or one LLM
description per class), CLIP hard negatives, and the two training sets: `stage1/` (image, description,
3 negative categories with descriptions) and `stage2/` (open-set and multiple-choice instructions).

Entry point: `harness train data` (`finedefics_train.data.cli`); the pieces: `sources` (train splits,
leakage), `cache` (resumable JSONL replies), `attributes` (the three LLM/VQA stages, human, class
tags), `negatives`, `build` (rows, datasets on disk, manifest, CSV export).
"""
