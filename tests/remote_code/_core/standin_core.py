"""A tiny causal transformer and image encoder shared by the remote-code stand-ins.

The test builder copies this file next to each stand-in's modelling file, so every stand-in folder
is self-contained, as a hub checkpoint with custom code is. Written against plain torch so it runs
on whatever transformers release loads it.
"""

import numpy
import torch
from torch import nn


class TinyDecoder(nn.Module):
    """Token embeddings, learned positions, causal transformer layers and an LM head."""

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        num_layers: int = 2,
        num_heads: int = 4,
        max_positions: int = 2048,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.tok_embeddings = nn.Embedding(vocab_size, hidden_size)
        self.positions = nn.Embedding(max_positions, hidden_size)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(hidden_size, num_heads, 2 * hidden_size, dropout=0.0, batch_first=True)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_size)
        self.lm_head = nn.Linear(hidden_size, vocab_size, bias=False)

    def forward(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        batch, length, _ = inputs_embeds.shape
        if attention_mask is None:
            attention_mask = torch.ones(batch, length, dtype=torch.long, device=inputs_embeds.device)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = inputs_embeds + self.positions(positions)
        blocked = torch.triu(torch.ones(length, length, dtype=torch.bool, device=hidden.device), 1)
        blocked = blocked[None] | ~attention_mask.bool()[:, None, :]
        blocked &= ~torch.eye(length, dtype=torch.bool, device=hidden.device)[
            None
        ]  # padding attends to itself
        mask = blocked.repeat_interleave(self.num_heads, dim=0)
        for layer in self.layers:
            hidden = layer(hidden, src_mask=mask)
        return self.lm_head(self.norm(hidden))


class TinyImageEncoder(nn.Module):
    """size x size RGB -> (size / patch)^2 tokens of the language model's width."""

    def __init__(self, hidden_size: int, image_size: int = 32, patch_size: int = 8):
        super().__init__()
        self.image_size = image_size
        self.patch = nn.Conv2d(3, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch.stride[0]) ** 2

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.patch(pixel_values.to(self.patch.weight.dtype)).flatten(2).transpose(1, 2)
        return self.proj(torch.tanh(features)) * 4.0  # loud enough that the picture moves the logits


def pixels(image, size: int) -> torch.Tensor:
    """PIL image -> [3, size, size] in [-1, 1]."""
    image = image.convert("RGB").resize((size, size))
    data = torch.from_numpy(numpy.asarray(image, dtype=numpy.float32).copy())
    return (data.permute(2, 0, 1) / 127.5) - 1.0


def greedy(step, embeds: torch.Tensor, embed_tokens, max_new_tokens: int, eos_ids) -> list[int]:
    """Greedy decoding without a cache: `step(embeds) -> logits` over the whole sequence each time."""
    new = []
    for _ in range(max_new_tokens):
        token = int(step(embeds)[0, -1].argmax())
        new.append(token)
        if token in eos_ids:
            break
        embeds = torch.cat([embeds, embed_tokens(torch.tensor([[token]], device=embeds.device))], dim=1)
    return new
