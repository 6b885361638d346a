"""Residual-branch regularisers: stochastic depth and per-channel scales."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): zeroes a whole residual branch per sample.

    In training each sample's branch is kept with probability 1 - p and scaled by 1 / (1 - p);
    in eval it is the identity.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_path rate must be in [0, 1) (got {p})")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        """Shape: x `(B, ...)` -> `(B, ...)`."""
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)  # (B, 1, ..., 1): one draw per sample
        mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerScale(nn.Module):
    """Learned per-channel scale of a residual branch (CaiT), `gamma` initialised to `init`."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        """Shape: x `(..., D)` -> `(..., D)`."""
        return x * self.gamma
