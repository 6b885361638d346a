"""EViT (Liang et al. 2022): keep the patch tokens the CLS token attends to most."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from archlab.compiler.nn.attention import Attention
from archlab.compiler.nn.masks import dense_mask
from archlab.compiler.nn.pruning.stage import NeedKind, Tokens, TokenStage
from archlab.compiler.nn.pruning.state import (
    TokenState,
    gather_tokens,
    keep_rows,
    kept_count,
    record_stage,
    refuse_policy,
    start_state,
)

if TYPE_CHECKING:
    from archlab.specs.analysis import PruneStage


class AttentionTopK(TokenStage):
    """An EViT stage: keep the patch tokens the first CLS token attends to most.

    `cls_attention` `(B, T)` is that attention averaged over heads, from the layer's own attention.
    With `fuse`, the dropped tokens' attention-weighted sum (weights not renormalised, as EViT
    defines it) is appended as one more patch token. No parameters. `keep_now`, when set, replaces
    `keep` in training (the keep-rate warm-up schedule).
    """

    need: ClassVar[NeedKind | None] = "cls"

    @classmethod
    def from_plan(cls, stage: PruneStage, name: str) -> AttentionTopK:
        assert stage.keep is not None
        return cls(stage.keep, stage.n_cls, stage.fuse, name)

    def __init__(self, keep: float, n_cls: int, fuse: bool, name: str) -> None:
        super().__init__()
        self.keep, self.n_cls, self.fuse, self.name = keep, n_cls, fuse, name
        self.keep_now: float | None = None

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None,
        state: TokenState | None,
        cls_attention: Tensor,
        trace: bool = False,
    ) -> tuple[Tensor, Tensor | None, TokenState]:
        """Shape: x `(B, T, D)`, mask `(B, T)`, cls_attention `(B, T)` -> `(B, T', D)`, ..."""
        refuse_policy(state, self.name)
        state = start_state(x, state, trace)
        n = self.n_cls
        patches = x.shape[1] - n
        keep = self.keep_now if (self.training and self.keep_now is not None) else self.keep
        k = kept_count(keep, patches)
        virtual = patches if state.virtual is None else state.virtual
        target = kept_count(keep, virtual) / max(virtual, 1)
        if k >= patches:
            state = state._replace(virtual=kept_count(keep, virtual))
            return x, mask, record_stage(state, self.name, "attention_topk", n, target)
        attn = cls_attention[:, n:]  # (B, N)
        order = attn.topk(patches, dim=1).indices if self.fuse else attn.topk(k, dim=1).indices
        keep_idx = order[:, :k]
        extra = None
        if self.fuse:
            drop_idx = order[:, k:]  # (B, N - k)
            w = gather_tokens(attn, drop_idx).unsqueeze(-1).to(x.dtype)  # (B, N - k, 1)
            extra = (gather_tokens(x[:, n:], drop_idx) * w).sum(1, keepdim=True)  # (B, 1, D)
        x, mask, state = keep_rows(x, mask, state, n, keep_idx, extra)
        virtual_after = kept_count(keep, virtual) + (1 if self.fuse else 0)
        state = state._replace(virtual=virtual_after)
        return x, mask, record_stage(state, self.name, "attention_topk", n, target)

    def after_attention(
        self,
        x: Tensor,
        mask: Tensor | None,
        state: TokenState | None,
        seen: Tensor | None,
        trace: bool,
    ) -> Tokens:
        assert seen is not None  # the layer's CLS attention, as `need` asks
        return self(x, mask, state, seen, trace)

    def extra_repr(self) -> str:
        return f"keep={self.keep}, n_cls={self.n_cls}, fuse={self.fuse}"


def cls_attention(
    attention: Attention,
    q: Tensor,
    k: Tensor,
    key_padding: Tensor | None,
    bias: Tensor | None,
    key_bias: Tensor | None,
) -> Tensor:
    """The first query's softmax attention in `attention`, averaged over heads, in float32.

    Shape: q `(B, H, T, E)`, k `(B, K, S, E)`, key_padding `(B, S)`, bias `(H, T, S)`, key_bias
    `(B, 1, 1, S)` -> `(B, S)`.
    """
    T, S = q.shape[2], k.shape[2]
    kr, _ = attention.repeat_kv(k, k)
    scores = (q[:, :, :1].float() @ kr.float().transpose(-2, -1)) * attention.scale  # (B, H, 1, S)
    table = attention.score_bias(T, S, bias, key_bias, torch.float32)
    if table is not None:
        scores = scores + table[..., :1, :]
    allowed = dense_mask(attention.mask, T, S, key_padding, q.device)
    if allowed is not None:
        scores = scores.masked_fill(~allowed[..., :1, :], float("-inf"))
    return scores.softmax(dim=-1).mean(dim=1)[:, 0]  # (B, S)


__all__ = ["AttentionTopK", "cls_attention"]
