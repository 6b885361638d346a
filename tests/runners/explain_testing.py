"""Chefer's LRP rules written out from their contributions, one sample at a time: the
references the batched rules of ``runners.explain_lrp`` are checked against."""

from __future__ import annotations

import torch


def z_plus(x: torch.Tensor, weight: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """The z+ rule written from its contributions: (x_i W_ji)^+ shares of each output."""
    contrib = (x[:, None, :] * weight[None]).clamp(min=0)  # (n, out, in)
    Z = contrib.sum(-1)
    return (contrib * (R / (Z + 1e-9) * (Z != 0))[..., None]).sum(1)


def split(a: torch.Tensor, b: torch.Tensor, R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A residual sum's relevance split between its addends, the sample's total kept."""
    S = R / (a + b + 1e-9) * ((a + b) != 0)
    ra, rb = a * S, b * S
    sa, sb = ra.sum(), rb.sum()
    fa, fb = sa.abs() / (sa.abs() + sb.abs()) * R.sum(), sb.abs() / (sa.abs() + sb.abs()) * R.sum()
    return ra * fa / sa, rb * fb / sb
