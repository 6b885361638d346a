"""Rotary position embedding (RoPE, Su et al. 2021), applied to queries and keys."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RotaryEmbedding(nn.Module):
    """Rotates the first `round(fraction * head_dim)` channels of each head by its position.

    Channel pairs (c, c + R/2) of the rotated part R turn by the angle p * base^(-2c / R) at
    position p (the half-split layout of GPT-NeoX and LLaMA), so q·k depends on positions only
    through their offset. Queries take positions 0..T-1 and keys 0..S-1. The remaining channels
    pass through unchanged. cos/sin tables are non-persistent buffers for `max_len` positions.
    """

    def __init__(
        self, head_dim: int, max_len: int, base: float = 10000.0, fraction: float = 1.0
    ) -> None:
        super().__init__()
        rotated = round(fraction * head_dim)
        if not 0.0 < fraction <= 1.0 or rotated == 0 or rotated % 2:
            raise ValueError(
                f"rotary fraction {fraction} of head_dim {head_dim} rotates {rotated} channels; "
                "it must be a positive even number"
            )
        self.rotated = rotated
        self.base = base
        self.max_len = max_len
        self.cos: Tensor
        self.sin: Tensor
        cos, sin = self._tables(max_len, torch.get_default_dtype(), None)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(
        self, length: int, dtype: torch.dtype, device: torch.device | None
    ) -> tuple[Tensor, Tensor]:
        """cos and sin of every angle for positions 0..length-1, `(L, R)` each."""
        R = self.rotated
        inv_freq = self.base ** -(torch.arange(0, R, 2, dtype=torch.float64) / R)  # (R/2,)
        angle = torch.arange(length, dtype=torch.float64)[:, None] * inv_freq  # (L, R/2)
        angle = torch.cat([angle, angle], dim=1).to(device)  # (L, R)
        return angle.cos().to(dtype), angle.sin().to(dtype)

    def extend(self, length: int) -> None:
        """Tables for `length` positions (decoding past `max_len`, which a sliding window
        allows); the first `max_len` rows stay as they were."""
        if length > self.cos.shape[0]:
            self.cos, self.sin = self._tables(length, self.cos.dtype, self.cos.device)

    def rotate(self, x: Tensor) -> Tensor:
        """Shape: x `(B, H, T, E)` -> `(B, H, T, E)`, position t at index t."""
        length = x.shape[-2]
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds rotary max_len {self.max_len}")
        return self._turn(x, self.cos[:length].to(x.dtype), self.sin[:length].to(x.dtype))

    def rotate_at(self, x: Tensor, positions: Tensor) -> Tensor:
        """`rotate` with position `positions[t]` at index t. Shape: x `(B, H, T, E)`,
        positions `(T,)` -> `(B, H, T, E)`."""
        return self._turn(x, self.cos[positions].to(x.dtype), self.sin[positions].to(x.dtype))

    def _turn(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        head, rest = x[..., : self.rotated], x[..., self.rotated :]
        first, second = head.chunk(2, dim=-1)  # (B, H, T, R/2) each
        turned = torch.cat([-second, first], dim=-1)  # (B, H, T, R): head rotated by 90 degrees
        return torch.cat([head * cos + turned * sin, rest], dim=-1)

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Rotate queries and keys.

        Shape:
            q `(B, H, T, E)`, k `(B, K, S, E)` -> the same shapes.
        """
        return self.rotate(q), self.rotate(k)
