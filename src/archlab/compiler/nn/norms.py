"""Normalisation layers by name."""

from __future__ import annotations

from typing import Literal

from torch import nn

NormKind = Literal["layernorm", "rmsnorm"]


def make_norm(kind: NormKind, dim: int, eps: float) -> nn.Module:
    """`nn.LayerNorm` or `nn.RMSNorm` over the last dimension, with a learned scale."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    raise ValueError(f"unknown norm kind {kind!r}; choose layernorm or rmsnorm")
