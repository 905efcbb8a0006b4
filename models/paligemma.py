"""PaliGemma (mix checkpoints): the processor puts the image tokens and <bos> before the prompt and
"\n" after it; the prefix attends bidirectionally, the answer is a causal `suffix=`. Positions count
from 1. The prompt carries the mix checkpoints' VQA task prefix, "answer en"."""

from __future__ import annotations

from models.base import FGVRModel
from models.scoring import SuffixScorer


class PaliGemmaFGVR(FGVRModel):
    model_class = "PaliGemmaForConditionalGeneration"
    prompt_template = "answer en {question}"
    scorer_class = SuffixScorer
    position_offset = 1
