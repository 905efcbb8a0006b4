"""Stand-in for MobileVLM V2's MobileLlamaForCausalLM: the published interface on a tiny network.

`model.get_vision_tower().image_processor.preprocess(images, return_tensors="pt")`, input ids with
IMAGE_TOKEN_INDEX (-200) where the picture goes (mobilevlm.utils.tokenizer_image_token), and
`model(input_ids, images=...)` / `model.generate(input_ids, images=..., max_new_tokens=...)`.
"""

import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_mobilevlm import MobileVLMConfig
from .standin_core import TinyDecoder, TinyImageEncoder, greedy, pixels

IMAGE_TOKEN_INDEX = -200


class ImageProcessor:
    image_mean = (0.5, 0.5, 0.5)

    def __init__(self, size):
        self.size = size

    def preprocess(self, images, return_tensors="pt"):
        return {"pixel_values": torch.stack([pixels(image, self.size) for image in images])}


class VisionTower(TinyImageEncoder):
    @property
    def image_processor(self):
        return ImageProcessor(self.image_size)


class MobileLlamaForCausalLM(PreTrainedModel):
    config_class = MobileVLMConfig
    base_model_prefix = "model"

    def __init__(self, config):
        super().__init__(config)
        self.model = TinyDecoder(
            config.vocab_size, config.hidden_size, config.num_hidden_layers, config.num_attention_heads
        )
        self.vision_tower = VisionTower(config.hidden_size, 32, 8)  # the LDPv2 projector is folded in here
        self.post_init()

    def get_vision_tower(self):
        return self.vision_tower

    def _embed(self, input_ids, images):
        """Replaces each IMAGE_TOKEN_INDEX with the image's tokens (prepare_inputs_labels_for_multimodal)."""
        rows = []
        for row, ids in enumerate(input_ids):
            pieces, start = [], 0
            for position in torch.where(ids == IMAGE_TOKEN_INDEX)[0].tolist():
                pieces += [
                    self.model.tok_embeddings(ids[start:position]),
                    self.vision_tower(images[row : row + 1])[0],
                ]
                start = position + 1
            pieces.append(self.model.tok_embeddings(ids[start:]))
            rows.append(torch.cat(pieces))
        return torch.stack(rows)

    def forward(self, input_ids=None, attention_mask=None, images=None, **kwargs):
        return CausalLMOutputWithPast(logits=self.model(self._embed(input_ids, images)))

    @torch.no_grad()
    def generate(
        self, input_ids=None, images=None, max_new_tokens=16, do_sample=False, eos_token_id=None, **kwargs
    ):
        stop = {self.config.eos_token_id if eos_token_id is None else eos_token_id}
        new = greedy(
            lambda e: self.model(e),
            self._embed(input_ids, images),
            self.model.tok_embeddings,
            max_new_tokens,
            stop,
        )
        return torch.cat([input_ids, torch.tensor([new], device=input_ids.device)], dim=1)
