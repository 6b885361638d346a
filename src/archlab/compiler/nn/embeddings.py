"""Turning inputs into token sequences: token ids, image patches, learned CLS tokens."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TokenEmbedding(nn.Module):
    """A `(V, D)` lookup table, `weight`, initialised normal with std 0.02.

    With `scale` the embeddings are multiplied by sqrt(D) (Vaswani et al.).
    """

    def __init__(self, vocab: int, dim: int, scale: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab, dim))
        nn.init.normal_(self.weight, std=0.02)
        self.multiplier = math.sqrt(dim) if scale else 1.0

    def forward(self, ids: Tensor) -> Tensor:
        """Shape: ids `(B, T)` integer -> `(B, T, D)`."""
        x = F.embedding(ids, self.weight)
        return x * self.multiplier if self.multiplier != 1.0 else x

    def extra_repr(self) -> str:
        vocab, dim = self.weight.shape
        return f"{vocab}, {dim}, scale={self.multiplier != 1.0}"


class PatchEmbedding(nn.Module):
    """Non-overlapping `patch_h x patch_w` patches of an image, each projected to D (ViT).

    One strided `Conv2d`, `proj`; tokens come out in row-major order of the patch grid.
    """

    def __init__(self, channels: int, dim: int, patch_h: int, patch_w: int) -> None:
        super().__init__()
        patch = (patch_h, patch_w)
        self.proj = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)

    def forward(self, image: Tensor) -> Tensor:
        """Shape: image `(B, C, Hi, Wi)` -> `(B, N, D)`, N = (Hi / patch_h) (Wi / patch_w)."""
        return self.proj(image).flatten(2).transpose(1, 2)  # (B, D, Gh, Gw) -> (B, N, D)


class ClsToken(nn.Module):
    """Prepends `count` learned tokens (CLS, or CLS and distillation), `tokens` `(1, count, D)`."""

    def __init__(self, count: int, dim: int) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(1, count, dim))
        nn.init.trunc_normal_(self.tokens, std=0.02, a=-0.04, b=0.04)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Prepend the tokens, and True (real) for them to the padding mask.

        Shape:
            x `(B, N, D)`, mask `(B, N)` -> `(B, count + N, D)`, `(B, count + N)`.
        """
        B, count = x.shape[0], self.tokens.shape[1]
        x = torch.cat([self.tokens.expand(B, -1, -1).to(x.dtype), x], dim=1)
        if mask is not None:
            mask = torch.cat([mask.new_ones(B, count), mask], dim=1)
        return x, mask
