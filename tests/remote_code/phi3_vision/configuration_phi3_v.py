"""Stand-in for Phi-3-Vision's configuration_phi3_v.py (tiny sizes)."""

from transformers import PretrainedConfig


class Phi3VConfig(PretrainedConfig):
    model_type = "phi3_v"

    def __init__(
        self,
        vocab_size=1010,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        img_processor=None,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.img_processor = img_processor or {"image_size": 32, "patch_size": 8}
        super().__init__(**kwargs)
