"""Additive position encodings: a `(L, D)` table added to the residual stream.

In-attention positions live next door: rotary in `rotary.py`, ALiBi and T5 relative bias in
`bias.py`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def sinusoidal_table(max_len: int, dim: int) -> Tensor:
    """The fixed encoding of Vaswani et al., a `(max_len, dim)` tensor of the default dtype.

    PE[p, 2i] = sin(p / 10000^(2i / dim)) and PE[p, 2i + 1] = cos(p / 10000^(2i / dim)); an odd
    `dim` ends on a sine column.
    """
    position = torch.arange(max_len, dtype=torch.float64)[:, None]  # (L, 1)
    exponent = torch.arange(0, dim, 2, dtype=torch.float64) / dim  # (ceil(D/2),) = 2i / dim
    angle = position / 10000.0**exponent  # (L, ceil(D/2))
    table = torch.empty(max_len, dim, dtype=torch.float64)
    table[:, 0::2] = angle.sin()
    table[:, 1::2] = angle[:, : dim // 2].cos()
    return table.to(torch.get_default_dtype())


def sincos_2d_table(grid_h: int, grid_w: int, dim: int) -> Tensor:
    """The 2-D sine-cosine encoding of MAE for a row-major `grid_h x grid_w` grid, `(N, dim)`.

    The first half of the channels encodes the column, the second half the row (MAE's layout);
    each half is `[sin(p * w_k), cos(p * w_k)]` with w_k = 10000^(-k / (dim / 4)).
    """
    if dim % 4:
        raise ValueError(f"sincos_2d needs dim divisible by 4 (got {dim})")
    quarter = dim // 4
    freq = 10000.0 ** -(torch.arange(quarter, dtype=torch.float64) / quarter)  # (D/4,)
    rows, cols = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64),
        torch.arange(grid_w, dtype=torch.float64),
        indexing="ij",
    )  # (Gh, Gw) each

    def encode(coordinate: Tensor) -> Tensor:
        angle = coordinate.reshape(-1, 1) * freq  # (N, D/4)
        return torch.cat([angle.sin(), angle.cos()], dim=1)  # (N, D/2)

    return torch.cat([encode(cols), encode(rows)], dim=1).to(torch.get_default_dtype())


def _add_table(x: Tensor, table: Tensor, clock: Any = None) -> Tensor:
    """`x` plus the table's rows for positions 0..T-1, or, while decoding, for the positions
    the decoding's clock gives (`kv_cache.Clock.table_positions`, `(1|B, T)`)."""
    if clock is not None:
        return x + table[clock.table_positions()].to(x.dtype)
    length, max_len = x.shape[1], table.shape[0]
    if length > max_len:
        raise ValueError(f"sequence length {length} exceeds the position table's {max_len}")
    return x + table[:length].to(x.dtype)


class SinusoidalPosition(nn.Module):
    """Adds the fixed sinusoidal encoding (`sinusoidal_table`) to positions 0..T-1."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.table: Tensor
        self.register_buffer("table", sinusoidal_table(max_len, dim), persistent=False)
        self.clock: Any = None  # while decoding: where the new tokens sit

    def extend(self, length: int) -> None:
        """A table of `length` positions (decoding past `max_len` with a sliding window)."""
        if length > self.table.shape[0]:
            table = sinusoidal_table(length, self.table.shape[1])
            self.table = table.to(self.table.device, self.table.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: x `(B, T, D)` -> `(B, T, D)`, T <= max_len."""
        return _add_table(x, self.table, self.clock)


class LearnedPosition(nn.Module):
    """A learned `(max_len, D)` table, `weight`, added to positions 0..T-1."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        nn.init.trunc_normal_(self.weight, std=0.02, a=-0.04, b=0.04)
        self.clock: Any = None  # while decoding: where the new tokens sit

    def forward(self, x: Tensor) -> Tensor:
        """Shape: x `(B, T, D)` -> `(B, T, D)`, T <= max_len."""
        return _add_table(x, self.weight, self.clock)


class SinCos2dPosition(nn.Module):
    """MAE's fixed 2-D sine-cosine encoding of a patch grid, after `n_cls` zero rows for CLS."""

    def __init__(self, grid_h: int, grid_w: int, dim: int, n_cls: int = 0) -> None:
        super().__init__()
        table = torch.cat([torch.zeros(n_cls, dim), sincos_2d_table(grid_h, grid_w, dim)])
        self.table: Tensor
        self.register_buffer("table", table, persistent=False)  # (n_cls + Gh * Gw, D)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: x `(B, N, D)` -> `(B, N, D)`, N <= n_cls + grid_h * grid_w."""
        return _add_table(x, self.table)
