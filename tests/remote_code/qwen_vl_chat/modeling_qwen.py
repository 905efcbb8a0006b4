"""Stand-in for Qwen-VL-Chat's modeling_qwen.py: the published interface (`model.chat`,
`model.generate(input_ids)` returning prompt + answer ids, image paths inside `<img>` spans,
`model(input_ids).logits`) on a tiny random network."""

import torch
from PIL import Image
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_qwen import QWenConfig
from .standin_core import TinyDecoder, TinyImageEncoder, greedy, pixels


def make_context(tokenizer, query, history=None, system="You are a helpful assistant."):
    """Qwen's chatml context (qwen_generation_utils.make_context, chat_format="chatml")."""
    text = f"<|im_start|>system\n{system}<|im_end|>"
    for turn_query, turn_response in history or []:
        text += (
            f"\n<|im_start|>user\n{turn_query}<|im_end|>\n<|im_start|>assistant\n{turn_response}<|im_end|>"
        )
    text += f"\n<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n"
    return text, tokenizer(text)["input_ids"]


class QWenLMHeadModel(PreTrainedModel):
    config_class = QWenConfig
    base_model_prefix = "transformer"

    def __init__(self, config):
        super().__init__(config)
        self.transformer = TinyDecoder(
            config.vocab_size, config.hidden_size, config.num_hidden_layers, config.num_attention_heads
        )
        self.visual = TinyImageEncoder(
            config.hidden_size, config.visual["image_size"], config.visual["patch_size"]
        )
        self.post_init()

    def _embed(self, input_ids):
        embeds = self.transformer.tok_embeddings(input_ids)
        start = self.config.visual["image_start_id"]
        for row, position in zip(*torch.where(input_ids == start)):
            end = position + 1 + self.visual.num_tokens
            path = bytes(int(t) for t in input_ids[row, position + 1 : end] if t < 256).decode("utf-8")
            picture = pixels(Image.open(path), self.visual.image_size)[None].to(embeds.device)
            embeds[row, position + 1 : end] = self.visual(picture)[0].to(embeds.dtype)
        return embeds

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        logits = self.transformer(self._embed(input_ids), attention_mask)
        return CausalLMOutputWithPast(logits=logits)

    @torch.no_grad()
    def generate(self, input_ids=None, max_new_tokens=16, do_sample=False, **kwargs):
        """Greedy continuation of one raw prompt (FOCI-Benchmark's QwenVLModel calls this, not chat)."""
        embeds = self._embed(input_ids)
        new = greedy(
            lambda e: self.transformer(e), embeds, self.transformer.tok_embeddings, max_new_tokens, set()
        )
        return torch.cat([input_ids, torch.tensor([new], device=input_ids.device)], dim=1)

    @torch.no_grad()
    def chat(
        self,
        tokenizer,
        query,
        history=None,
        system="You are a helpful assistant.",
        max_new_tokens=16,
        **kwargs,
    ):
        _, ids = make_context(tokenizer, query, history, system)
        embeds = self._embed(torch.tensor([ids], device=self.device))
        stop = {tokenizer.im_end_id, tokenizer.eos_token_id}
        new = greedy(
            lambda e: self.transformer(e), embeds, self.transformer.tok_embeddings, max_new_tokens, stop
        )
        response = tokenizer.decode([t for t in new if t not in stop])
        return response, (history or []) + [(query, response)]
