"""Stand-in for Qwen-VL-Chat's tokenization_qwen.py: byte-level instead of tiktoken, same interface.

As in Qwen-VL, `<img>PATH</img>` becomes <img>, the path's bytes padded with <imgpad> to a fixed
span, </img>; the model reads the path back from those ids and opens the picture itself.
"""

import re

from transformers import PreTrainedTokenizer

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<imgpad>"]
IMAGE_SPAN = 64  # tokens between <img> and </img> (Qwen-VL: 256)


class QWenTokenizer(PreTrainedTokenizer):
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, image_start_tag="<img>", image_end_tag="</img>", **kwargs):
        self.image_start_tag = image_start_tag
        self.image_end_tag = image_end_tag
        self.special_ids = {token: 256 + i for i, token in enumerate(SPECIALS)}
        self.im_start_id = self.special_ids["<|im_start|>"]
        self.im_end_id = self.special_ids["<|im_end|>"]
        kwargs.setdefault("eos_token", "<|endoftext|>")
        kwargs.setdefault("pad_token", "<|endoftext|>")
        super().__init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        return 256 + len(SPECIALS)

    def get_vocab(self):
        vocab = {f"<0x{b:02X}>": b for b in range(256)}
        vocab.update(self.special_ids)
        return vocab

    def from_list_format(self, list_format):
        text, num_images = "", 0
        for element in list_format:
            if "image" in element:
                num_images += 1
                text += (
                    f"Picture {num_images}: {self.image_start_tag}{element['image']}{self.image_end_tag}\n"
                )
            elif "text" in element:
                text += element["text"]
            else:
                raise ValueError(f"unsupported element {element}")
        return text

    def tokenize(self, text, **kwargs):
        tokens = []
        pattern = "(" + "|".join(re.escape(t) for t in SPECIALS) + ")"
        inside_image = False
        for piece in re.split(pattern, text):
            if piece in SPECIALS:
                tokens.append(piece)
                inside_image = {"<img>": True, "</img>": False}.get(piece, inside_image)
            elif piece and inside_image:
                path = [f"<0x{b:02X}>" for b in piece.encode("utf-8")]
                if len(path) > IMAGE_SPAN:
                    raise ValueError(f"image path longer than {IMAGE_SPAN} bytes: {piece}")
                tokens.extend(path + ["<imgpad>"] * (IMAGE_SPAN - len(path)))
            elif piece:
                tokens.extend(f"<0x{b:02X}>" for b in piece.encode("utf-8"))
        return tokens

    def _convert_token_to_id(self, token):
        return self.special_ids.get(token, int(token[3:5], 16) if token.startswith("<0x") else 0)

    def _convert_id_to_token(self, index):
        return SPECIALS[index - 256] if index >= 256 else f"<0x{index:02X}>"

    def convert_tokens_to_string(self, tokens):
        data = bytes(int(t[3:5], 16) for t in tokens if t.startswith("<0x"))
        return data.decode("utf-8", errors="replace")

    def save_vocabulary(self, save_directory, filename_prefix=None):
        return ()
