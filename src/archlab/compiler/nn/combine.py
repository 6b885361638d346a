"""Merging several sequences into one, padding masks included (`add`, `average`, `concat`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

Masks = Sequence[Tensor | None] | None


def _filled(xs: Sequence[Tensor], masks: Masks) -> list[Tensor] | None:
    """Each input's `(B, N_i)` mask, all True where missing; None when no input has one."""
    if masks is None or all(m is None for m in masks):
        return None
    if len(masks) != len(xs):
        raise ValueError(f"got {len(masks)} masks for {len(xs)} inputs")
    return [
        m if m is not None else torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        for x, m in zip(xs, masks, strict=True)
    ]


def _all_real(xs: tuple[Tensor, ...], masks: Masks) -> Tensor | None:
    """A token is real where it is real in every input (None: nothing is padded)."""
    filled = _filled(xs, masks)
    if filled is None:
        return None
    mask = filled[0]
    for m in filled[1:]:
        mask = mask & m
    return mask


class Add(nn.Module):
    """Elementwise sum of sequences of equal shape; a token is real where it is in every input."""

    def forward(self, *xs: Tensor, masks: Masks = None) -> tuple[Tensor, Tensor | None]:
        """Shape: xs `(B, N, D)` each, masks `(B, N)` or None each -> `(B, N, D)`, `(B, N)`."""
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total, _all_real(xs, masks)


class Average(nn.Module):
    """Elementwise mean of inputs of equal shape (DeiT's two heads); masks AND as in `Add`."""

    def forward(self, *xs: Tensor, masks: Masks = None) -> tuple[Tensor, Tensor | None]:
        """Shape: xs `(B, N, D)` or `(B, D)` each, masks `(B, N)` or None each -> same, `(B, N)`."""
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total / len(xs), _all_real(xs, masks)


class Concat(nn.Module):
    """Joins sequences along the token axis (`sequence`) or the channel axis (`feature`).

    Masks concatenate along `sequence`; along `feature` the tokens are shared, so they AND.
    """

    def __init__(self, axis: Literal["sequence", "feature"] = "sequence") -> None:
        super().__init__()
        if axis not in ("sequence", "feature"):
            raise ValueError(f"unknown concat axis {axis!r}; choose sequence or feature")
        self.axis = axis

    def forward(self, *xs: Tensor, masks: Masks = None) -> tuple[Tensor, Tensor | None]:
        """Shape: xs `(B, N_i, D_i)`, masks `(B, N_i)` or None each.

        sequence: -> `(B, sum N_i, D)`, `(B, sum N_i)`; feature: -> `(B, N, sum D_i)`, `(B, N)`.
        """
        filled = _filled(xs, masks)
        if self.axis == "sequence":
            mask = None if filled is None else torch.cat(filled, dim=1)
            return torch.cat(xs, dim=1), mask
        return torch.cat(xs, dim=-1), _all_real(xs, masks)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"
