"""Stand-in for InternLM-XComposer2-VL's modeling file: the published interface on a tiny network.

`model.chat(tokenizer, query, image, history=[], do_sample=False)` with "<ImageHere>" in the query,
`encode_img(path)`, `interleav_wrap_chat(tokenizer, query, image_embeds, history, meta_instruction)`
returning ({"inputs_embeds": ...}, im_mask), `model.model.tok_embeddings`, and
`model(inputs_embeds=..., im_mask=...).logits`.
"""

import torch
from PIL import Image
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_internlm_xcomposer2 import InternLMXcomposer2Config
from .standin_core import TinyDecoder, TinyImageEncoder, greedy, pixels

META_INSTRUCTION = (
    "You are an AI assistant whose name is InternLM-XComposer (浦语·灵笔).\n"
    "- InternLM-XComposer (浦语·灵笔) is a multi-modality conversational language model that is developed by "
    "Shanghai AI Laboratory (上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n"
    "- InternLM-XComposer (浦语·灵笔) can understand and communicate fluently in the language chosen by the user "
    "such as English and 中文."
)


class InternLMXComposer2ForCausalLM(PreTrainedModel):
    config_class = InternLMXcomposer2Config
    base_model_prefix = "model"

    def __init__(self, config):
        super().__init__(config)
        self.max_length = 4096
        self.model = TinyDecoder(
            config.vocab_size, config.hidden_size, config.num_hidden_layers, config.num_attention_heads
        )
        self.vit = TinyImageEncoder(config.hidden_size, config.img_size, 8)
        self.post_init()

    def encode_img(self, image):
        if isinstance(image, str):
            image = pixels(Image.open(image), self.config.img_size)[None].to(self.device)
        return self.vit(image)

    def interleav_wrap_chat(self, tokenizer, query, image, history, meta_instruction):
        prompt = (
            f"[UNUSED_TOKEN_146]system\n{meta_instruction}[UNUSED_TOKEN_145]\n" if meta_instruction else ""
        )
        for record in history:
            prompt += (
                f"[UNUSED_TOKEN_146]user\n{record[0]}[UNUSED_TOKEN_145]\n"
                f"[UNUSED_TOKEN_146]assistant\n{record[1]}[UNUSED_TOKEN_145]\n"
            )
        prompt += f"[UNUSED_TOKEN_146]user\n{query}[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant\n"
        parts = prompt.split("<ImageHere>")
        if len(parts) != len(image) + 1:
            raise ValueError("Invalid <ImageHere> prompt format.")
        embeds, masks = [], []
        for index, part in enumerate(parts):
            if part:
                ids = tokenizer(part, return_tensors="pt")["input_ids"].to(self.device)
                embeds.append(self.model.tok_embeddings(ids))
                masks.append(torch.zeros(ids.shape, device=self.device))
            if index < len(image):
                embeds.append(image[index][None])
                masks.append(torch.ones(1, image[index].shape[0], device=self.device))
        wrapped = torch.cat(embeds, dim=1)[:, : self.max_length]
        return {"inputs_embeds": wrapped}, torch.cat(masks, dim=1)[:, : self.max_length].bool()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, **kwargs):
        if inputs_embeds is None:
            inputs_embeds = self.model.tok_embeddings(input_ids)
        im_mask = kwargs.get("im_mask")  # the real model routes image positions through Partial LoRA
        if im_mask is not None:
            inputs_embeds = inputs_embeds + im_mask[..., None].to(inputs_embeds.dtype) * 0.0
        return CausalLMOutputWithPast(logits=self.model(inputs_embeds, attention_mask))

    @torch.no_grad()
    def chat(
        self,
        tokenizer,
        query,
        image=None,
        history=[],  # noqa: B006 (published signature)
        max_new_tokens=1024,
        do_sample=True,
        meta_instruction=META_INSTRUCTION,
        **kwargs,
    ):
        images = self.encode_img(image) if image is not None else torch.zeros(0, 0, self.config.hidden_size)
        inputs, _ = self.interleav_wrap_chat(tokenizer, query, images, history, meta_instruction)
        stop = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("[UNUSED_TOKEN_145]")}
        new = greedy(
            lambda e: self(inputs_embeds=e).logits,
            inputs["inputs_embeds"],
            self.model.tok_embeddings,
            max_new_tokens,
            stop,
        )
        response = tokenizer.decode(new, skip_special_tokens=True).split("[UNUSED_TOKEN_145]")[0]
        return response, history + [(query, response)]
