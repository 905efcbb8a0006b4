"""Stand-in for Qwen-VL-Chat's configuration_qwen.py (tiny sizes)."""

from transformers import PretrainedConfig


class QWenConfig(PretrainedConfig):
    model_type = "qwen"

    def __init__(
        self,
        vocab_size=262,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        visual=None,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        # as in Qwen-VL: the image span is image_start_id, the path bytes padded to a fixed span, image_start_id + 1
        self.visual = visual or {"image_size": 32, "patch_size": 4, "image_start_id": 259}
        super().__init__(**kwargs)
