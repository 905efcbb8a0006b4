"""Stand-in for InternLM-XComposer2-VL's configuration (tiny sizes)."""

from transformers import PretrainedConfig


class InternLMXcomposer2Config(PretrainedConfig):
    model_type = "internlmxcomposer2"

    def __init__(
        self,
        vocab_size=1010,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        img_size=32,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.img_size = img_size
        super().__init__(**kwargs)
