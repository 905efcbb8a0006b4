"""InternLM-XComposer2-VL-7B (remote code): `model.chat(tokenizer, query, image)` with "<ImageHere>"
in the query and the model's own system prompt, as in the model card. Scores use the same context
(`interleav_wrap_chat`) followed by the answer's token embeddings."""

from __future__ import annotations

import inspect

import torch

from models.remote import RemoteCodeModel
from models.scoring import answer_score, join_answer

IMAGE = "<ImageHere>"


class XComposer2FGVR(RemoteCodeModel):
    image_token = IMAGE
    chat_interface = True

    @property
    def meta_instruction(self) -> str:
        """The system prompt: `model.chat`'s default; FOCI's (InternLMXComposerModel) is empty."""
        if self.foci is not None and self.foci.system_prompt is not None:
            return self.foci.system_prompt
        return inspect.signature(self.model.chat).parameters["meta_instruction"].default

    def build_prompt(self, question, n_images):
        # the context interleav_wrap_chat builds around the query (the system turn included)
        system = (
            f"[UNUSED_TOKEN_146]system\n{self.meta_instruction}[UNUSED_TOKEN_145]\n"
            if self.meta_instruction
            else ""
        )
        return f"{system}[UNUSED_TOKEN_146]user\n{IMAGE * n_images}{question}[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant\n"

    def generate_one(self, question, images, max_new_tokens):
        with self.image_files(images[:1]) as paths:
            response, _ = self.model.chat(
                self.tokenizer,
                query=IMAGE * len(paths) + question,
                image=paths[0],
                history=[],
                do_sample=False,
                max_new_tokens=max_new_tokens,
                meta_instruction=self.meta_instruction,
            )
        return response

    def score_answer(self, prompt, answer, images):
        query = prompt.split("[UNUSED_TOKEN_146]user\n", 1)[1].rsplit(
            "[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant", 1
        )[0]
        answer_text = join_answer(prompt, answer)[len(prompt) :]
        ids = self.tokenizer(answer_text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(
            self.device
        )
        with self.image_files(images[:1]) as paths, torch.inference_mode():
            embeds = self.model.encode_img(paths[0])
            inputs, im_mask = self.model.interleav_wrap_chat(
                self.tokenizer, query, embeds, [], self.meta_instruction
            )
            full = torch.cat([inputs["inputs_embeds"], self.model.model.tok_embeddings(ids)], dim=1)
            mask = torch.cat([im_mask, torch.zeros_like(ids, dtype=torch.bool)], dim=1)
            logits = self.model(inputs_embeds=full, im_mask=mask).logits[0]
        n = ids.shape[1]
        return answer_score(torch.log_softmax(logits[-n - 1 : -1].float(), dim=-1), ids[0].tolist())
