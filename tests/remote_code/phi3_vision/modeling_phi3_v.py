"""Stand-in for Phi-3-Vision's modeling_phi3_v.py: negative ids in `input_ids` are image positions,
`model(**processor_output).logits` and `model.generate(**processor_output, ...)` as published."""

import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_phi3_v import Phi3VConfig
from .standin_core import TinyDecoder, TinyImageEncoder, greedy


class Phi3VForCausalLM(PreTrainedModel):
    config_class = Phi3VConfig
    base_model_prefix = "model"

    def __init__(self, config):
        super().__init__(config)
        self.model = TinyDecoder(
            config.vocab_size, config.hidden_size, config.num_hidden_layers, config.num_attention_heads
        )
        self.vision_embed_tokens = TinyImageEncoder(config.hidden_size, **config.img_processor)
        self.post_init()

    def _embed(self, input_ids, pixel_values=None):
        embeds = self.model.tok_embeddings(input_ids.clamp(min=0))
        if pixel_values is not None:
            for row in range(input_ids.shape[0]):
                for tag in sorted(set((-input_ids[row][input_ids[row] < 0]).tolist())):
                    features = self.vision_embed_tokens(pixel_values[row, tag - 1][None])[0]
                    embeds[row, input_ids[row] == -tag] = features.to(embeds.dtype)
        return embeds

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, image_sizes=None, **kwargs):
        return CausalLMOutputWithPast(logits=self.model(self._embed(input_ids, pixel_values), attention_mask))

    @torch.no_grad()
    def generate(
        self,
        input_ids=None,
        attention_mask=None,
        pixel_values=None,
        image_sizes=None,
        max_new_tokens=16,
        eos_token_id=None,
        do_sample=False,
        **kwargs,
    ):
        stop = set(eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id])
        new = greedy(
            lambda e: self.model(e),
            self._embed(input_ids, pixel_values),
            self.model.tok_embeddings,
            max_new_tokens,
            stop,
        )
        return torch.cat([input_ids, torch.tensor([new], device=input_ids.device)], dim=1)
