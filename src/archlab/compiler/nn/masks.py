"""Attention mask patterns: which keys each query may see.

A `MaskPattern` is structural (independent of sequence length). `allows(i, j)` states its rule
once, on broadcastable index tensors, so the dense masks here and FlexAttention's `mask_mod` in
`attention.py` cannot disagree. Padding is a separate, per-batch bool `(B, S)` mask, True for real
tokens; `dense_mask` combines the two for kernels that take a mask tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

MaskKind = Literal["none", "causal", "sliding_window", "prefix", "block_local"]


@dataclass(frozen=True)
class MaskPattern:
    """Which key positions j each query position i may attend to.

    - `none`: every key.
    - `causal`: j <= i.
    - `sliding_window`: i - window < j <= i when `causal`, else |i - j| < window.
    - `prefix`: j <= i, or j < prefix_len (the prefix is bidirectional, the rest causal).
    - `block_local`: i // block == j // block, and j <= i when `causal`.

    `causal` is implied by the kinds `causal` and `prefix` (it is set to True for them) and must be
    False for `none`. Positions count from 0 at the start of both sequences.
    """

    kind: MaskKind
    causal: bool = False
    window: int | None = None
    prefix_len: int | None = None
    block: int | None = None

    def __post_init__(self) -> None:
        needs = {"sliding_window": "window", "prefix": "prefix_len", "block_local": "block"}
        if self.kind not in ("none", "causal", *needs):
            raise ValueError(f"unknown mask kind {self.kind!r}")
        for kind, field in needs.items():
            value = getattr(self, field)
            if kind == self.kind and value is None:
                raise ValueError(f"mask {self.kind} needs {field}")
            if kind != self.kind and value is not None:
                raise ValueError(f"mask {self.kind} takes no {field} (got {value})")
        if self.window is not None and self.window < 1:
            raise ValueError(f"sliding_window window must be >= 1 (got {self.window})")
        if self.block is not None and self.block < 1:
            raise ValueError(f"block_local block must be >= 1 (got {self.block})")
        if self.prefix_len is not None and self.prefix_len < 0:
            raise ValueError(f"prefix prefix_len must be >= 0 (got {self.prefix_len})")
        if self.kind == "none" and self.causal:
            raise ValueError("mask none cannot be causal; use kind 'causal'")
        if self.kind in ("causal", "prefix"):
            object.__setattr__(self, "causal", True)

    @property
    def is_plain(self) -> bool:
        """True when SDPA can apply the pattern without a mask tensor (`none` or `causal`)."""
        return self.kind in ("none", "causal")

    def allows(self, i: Tensor, j: Tensor) -> Tensor:
        """Bool tensor, True where query index `i` may see key index `j` (broadcasting)."""
        if self.kind == "none":
            return torch.ones_like(i - j, dtype=torch.bool)
        if self.kind == "causal":
            return j <= i
        if self.kind == "sliding_window":
            assert self.window is not None  # checked in __post_init__; narrows for mypy
            offset = i - j
            if self.causal:
                return (offset >= 0) & (offset < self.window)
            return offset.abs() < self.window
        if self.kind == "prefix":
            assert self.prefix_len is not None
            return (j <= i) | (j < self.prefix_len)
        assert self.block is not None
        same_block = (i // self.block) == (j // self.block)
        return same_block & (j <= i) if self.causal else same_block

    def allowed(self, T: int, S: int, device: torch.device | str | None = None) -> Tensor:
        """The pattern for T queries and S keys as a bool `(T, S)` tensor."""
        i = torch.arange(T, device=device)[:, None]  # (T, 1)
        j = torch.arange(S, device=device)[None, :]  # (1, S)
        return self.allows(i, j)


NO_MASK = MaskPattern("none")


def dense_mask(
    pattern: MaskPattern,
    T: int,
    S: int,
    key_padding: Tensor | None = None,
    device: torch.device | str | None = None,
) -> Tensor | None:
    """The pattern and a key padding mask combined into one bool mask for SDPA.

    Returns a tensor broadcastable to `(B, 1, T, S)` (True = may attend): `(1, 1, T, S)` without
    padding, `(B, 1, 1, S)` for padding alone, `(B, 1, T, S)` for both; None when nothing is masked.
    """
    allowed = None if pattern.kind == "none" else pattern.allowed(T, S, device)[None, None]
    if key_padding is None:
        return allowed
    keys = key_padding[:, None, None, :]  # (B, 1, 1, S)
    return keys if allowed is None else allowed & keys
