"""MobileVLM V2 (custom code: MobileLLaMA/Vicuna + LDPv2 projector), in its "v1" conversation format.

Hub checkpoints (mtgv/MobileVLM_V2-*) carry no auto_map: their classes come from the MobileVLM
repository (`mobilevlm` on PYTHONPATH), which registers them with transformers' Auto classes. A
checkpoint folder with an auto_map loads through trust_remote_code like the other remote models.
"""

from __future__ import annotations

import torch
from PIL import Image

from harness.core.errors import UserError
from models.remote import RemoteCodeModel
from models.scoring import join_answer, tail_score

IMAGE_TOKEN_INDEX = -200
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


class MobileVLMV2FGVR(RemoteCodeModel):
    prompt_template = SYSTEM + " USER: {images}\n{question} ASSISTANT:"

    def load_model(self, quantisation, path=None):
        if "auto_map" not in self.checkpoint_config():
            try:
                import mobilevlm.model.mobilellama  # noqa: F401  (registers MobileLlamaForCausalLM)
            except ImportError as error:
                raise UserError(
                    "mobilevlm_v2: the checkpoint's classes live in the MobileVLM repository; clone "
                    "https://github.com/Meituan-AutoML/MobileVLM and put it on PYTHONPATH "
                    "(see models/README-remote-code.md)"
                ) from error
        model = super().load_model(quantisation, path)
        self.image_processor = model.get_vision_tower().image_processor
        return model

    def input_ids(self, prompt: str) -> torch.Tensor:
        """mobilevlm.utils.tokenizer_image_token: the text around each <image>, IMAGE_TOKEN_INDEX in between."""
        chunks = [self.tokenizer(chunk)["input_ids"] for chunk in prompt.split(self.image_token)]
        ids = chunks[0]
        for chunk in chunks[1:]:
            ids = ids + [IMAGE_TOKEN_INDEX] + chunk[1:]  # only the first chunk keeps <s>
        return torch.tensor([ids], device=self.device)

    def pixels(self, images):
        """process_images with image_aspect_ratio "pad": pad to a square in the processor's mean colour."""
        fill = tuple(int(255 * x) for x in self.image_processor.image_mean)
        squares = []
        for image in images:
            side = max(image.size)
            square = Image.new("RGB", (side, side), fill)
            square.paste(image.convert("RGB"), ((side - image.width) // 2, (side - image.height) // 2))
            squares.append(square)
        return self.image_processor.preprocess(squares, return_tensors="pt")["pixel_values"].to(
            self.device, self.model.dtype
        )

    def generate_one(self, question, images, max_new_tokens):
        ids = self.input_ids(self.prompt_for(question, len(images)))
        output = self.model.generate(
            ids,
            images=self.pixels(images),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            use_cache=True,
            **self.generation_options(),
        )
        return self.tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True)

    def score_answer(self, prompt, answer, images):
        context, full = self.input_ids(prompt), self.input_ids(join_answer(prompt, answer))
        with torch.inference_mode():
            logits = self.model(full, images=self.pixels(images)).logits[0]
        return tail_score(logits, full[0], full.shape[1] - context.shape[1])
