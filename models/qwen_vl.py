"""Qwen-VL-Chat (remote code): chatml prompts; pictures go in as `<img>PATH</img>` spans built with
the tokenizer's `from_list_format`; answers come from `model.chat`, scores from `model(input_ids)`."""

from __future__ import annotations

import torch

from models.remote import RemoteCodeModel
from models.scoring import join_answer, tail_score

SYSTEM = "You are a helpful assistant."
CHATML = (
    "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{query}<|im_end|>\n<|im_start|>assistant\n"
)
EMPTY_IMAGE = "<img></img>"  # build_prompt's placeholder, filled with the picture's path when encoding


class QwenVLChatFGVR(RemoteCodeModel):
    chat_interface = True

    def query(self, question: str, paths: list[str]) -> str:
        return self.tokenizer.from_list_format([{"image": path} for path in paths] + [{"text": question}])

    def build_prompt(self, question, n_images):
        return CHATML.format(system=SYSTEM, query=self.query(question, [""] * n_images))

    def prompt_for(self, question, n_images):
        if self.foci is None:
            return super().prompt_for(question, n_images)
        # FOCI: the picture list first, then its template around the question; no system turn
        return self.query(self.foci.template.format(question=question), [""] * n_images)

    def generate_one(self, question, images, max_new_tokens):
        if self.foci is not None:
            return self.generate_foci(question, images, max_new_tokens)
        with self.image_files(images) as paths:
            response, _ = self.model.chat(
                self.tokenizer,
                query=self.query(question, paths),
                history=None,
                do_sample=False,
                max_new_tokens=max_new_tokens,
            )
        return response

    def generate_foci(self, question, images, max_new_tokens):
        """QwenVLModel.generate: the raw prompt through model.generate (not model.chat)."""
        with self.image_files(images) as paths:
            text = self.query(self.foci.template.format(question=question), paths)
            ids = torch.tensor([self.tokenizer(text)["input_ids"]], device=self.device)
            output = self.model.generate(input_ids=ids, do_sample=False, max_new_tokens=max_new_tokens)
        return self.tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True)

    def score_answer(self, prompt, answer, images):
        with self.image_files(images) as paths:
            for path in paths:
                prompt = prompt.replace(EMPTY_IMAGE, f"<img>{path}</img>", 1)
            context = self.tokenizer(prompt)["input_ids"]
            full = self.tokenizer(join_answer(prompt, answer))["input_ids"]
            ids = torch.tensor([full], device=self.device)
            with torch.inference_mode():
                logits = self.model(input_ids=ids).logits[0]
        return tail_score(logits, ids[0], len(full) - len(context))
