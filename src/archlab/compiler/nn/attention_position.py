"""How positions enter softmax attention: one part per variant, all with the same calls.

`Attention` takes one `AttentionPosition` and calls it without knowing the variant (torchtune's
`pos_embeddings=`): `rotate(q, k)` turns queries and keys (rotary), `bias(T, S, table)` gives the
additive `(H, T, S)` score bias (ALiBi computes it; a relative_bias attention passes on the table
its stack hands in), `score_mod(table, dtype)` is the same bias as FlexAttention's score_mod.
`kind` names the variant for the kernel choice (`choose_kernel`, `kernel_problem`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from archlab.compiler.nn.bias import AlibiBias
from archlab.compiler.nn.rotary import RotaryEmbedding

Position = Literal["rotary", "alibi", "relative_bias"]
ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


class AttentionPosition(nn.Module):
    """No position inside attention (the base of the other parts): nothing rotates, no bias."""

    kind: Position | None = None
    #: the stack hands its relative position table to every call (T5's relative_bias)
    takes_table = False

    def rotate(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Shape: q `(B, H, T, E)`, k `(B, K, S, E)` -> the same shapes."""
        return q, k

    def bias(self, T: int, S: int, table: Tensor | None) -> Tensor | None:
        """The additive score bias `(H, T, S)`, or None. `table`: the stack's relative table."""
        return table

    def rotate_at(self, q: Tensor, k: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """`rotate` for queries and keys both at `positions` `(T,)` (decoding's new tokens)."""
        return q, k

    def bias_at(self, qpos: Tensor, kpos: Tensor) -> Tensor | None:
        """`bias` for queries at `qpos` `(T,)` and keys at `kpos` `(S,)` (decoding); the relative
        table comes from the stack's cache instead."""
        return None

    def score_mod(self, table: Tensor | None, dtype: torch.dtype) -> ScoreMod | None:
        """`bias` as FlexAttention's score_mod(score, b, h, q_idx, kv_idx), or None."""
        if table is None:
            return None
        bias = table.to(dtype)
        return lambda score, b, h, q_idx, kv_idx: score + bias[h, q_idx, kv_idx]


class NoPosition(AttentionPosition):
    """Attention without positions of its own (an added position node, or none at all)."""


class RotaryPosition(AttentionPosition):
    """RoPE: queries and keys rotated by their positions (`rotary`, a `RotaryEmbedding`)."""

    kind: Position | None = "rotary"

    def __init__(self, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.rotary = rotary

    def rotate(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        return self.rotary(q, k)

    def rotate_at(self, q: Tensor, k: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        return self.rotary.rotate_at(q, positions), self.rotary.rotate_at(k, positions)


class AlibiPosition(AttentionPosition):
    """ALiBi: a per-head linear distance penalty on the scores (`alibi`, an `AlibiBias`)."""

    kind: Position | None = "alibi"

    def __init__(self, heads: int) -> None:
        super().__init__()
        self.alibi = AlibiBias(heads)

    def bias(self, T: int, S: int, table: Tensor | None) -> Tensor | None:
        return self.alibi(T, S)

    def bias_at(self, qpos: Tensor, kpos: Tensor) -> Tensor | None:
        return self.alibi.at(qpos, kpos)

    def score_mod(self, table: Tensor | None, dtype: torch.dtype) -> ScoreMod | None:
        slopes = self.alibi.slopes
        return lambda score, b, h, q_idx, kv_idx: score - slopes[h] * (q_idx - kv_idx).abs()


class RelativeBiasPosition(AttentionPosition):
    """T5's relative bias: the `(H, T, S)` table the stack computes once and hands to each call
    (it owns the learned weights, shared by its layers)."""

    kind: Position | None = "relative_bias"
    takes_table = True


__all__ = [
    "AlibiPosition",
    "AttentionPosition",
    "NoPosition",
    "Position",
    "RelativeBiasPosition",
    "RotaryPosition",
    "ScoreMod",
]
