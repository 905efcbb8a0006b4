"""Stand-in for MobileVLM V2's MobileVLMConfig (tiny sizes)."""

from transformers import PretrainedConfig


class MobileVLMConfig(PretrainedConfig):
    model_type = "mobilevlm"

    def __init__(
        self,
        vocab_size=1010,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_aspect_ratio="pad",
        mm_projector_type="ldpnetv2",
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.image_aspect_ratio = image_aspect_ratio
        self.mm_projector_type = mm_projector_type
        super().__init__(**kwargs)
