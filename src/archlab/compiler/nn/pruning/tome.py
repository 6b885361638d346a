"""ToMe (Bolya et al. 2023): merge similar patch tokens, and weight attention by their sizes."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from archlab.compiler.nn.attention import Attention
from archlab.compiler.nn.pruning.stage import NeedKind, Tokens, TokenStage
from archlab.compiler.nn.pruning.state import (
    TokenState,
    gather_tokens,
    record_stage,
    refuse_policy,
    remap,
    start_state,
)

if TYPE_CHECKING:
    from archlab.specs.analysis import PruneStage


class TokenMerge(TokenStage):
    """A ToMe stage: bipartite soft matching merges `r` pairs of patch tokens.

    The patch tokens alternate into sets A (even) and B (odd); each A token finds its most similar
    B token by the cosine of their attention keys (`keys` `(B, T, E)`, averaged over heads); the
    `r` best-matched A tokens merge into their B tokens as size-weighted means (at most half the
    patches merge). Sizes are carried in the state for proportional attention. The result is
    [CLS, unmerged A, B]. No parameters; with `r` = 0 it returns its input unchanged.
    """

    need: ClassVar[NeedKind | None] = "keys"

    @classmethod
    def from_plan(cls, stage: PruneStage, name: str) -> TokenMerge:
        assert stage.r is not None
        return cls(stage.r, stage.n_cls, name)

    def __init__(self, r: int, n_cls: int, name: str) -> None:
        super().__init__()
        self.r, self.n_cls, self.name = r, n_cls, name

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None,
        state: TokenState | None,
        keys: Tensor,
        trace: bool = False,
    ) -> tuple[Tensor, Tensor | None, TokenState]:
        """Shape: x `(B, T, D)`, keys `(B, T, E)` -> `(B, T - r, D)`, ..."""
        if mask is not None:
            raise ValueError(
                f"{self.name}: token merging (ToMe) does not take padded sequences; "
                "drop the padding mask or use dynamic / attention_topk pruning"
            )
        refuse_policy(state, self.name)
        state = start_state(x, state, trace)
        n = self.n_cls
        B, T, D = x.shape
        patches = T - n
        r = min(self.r, patches // 2)
        virtual = patches if state.virtual is None else state.virtual
        if r == 0:
            return x, mask, record_stage(state, self.name, "merge", n, 1.0)
        size = state.size if state.size is not None else x.new_ones(B, T, dtype=torch.float32)
        metric = F.normalize(keys[:, n:].float(), dim=-1)  # (B, N, E)
        a, b = metric[:, 0::2], metric[:, 1::2]  # (B, Na, E), (B, Nb, E)
        best, dst = (a @ b.transpose(1, 2)).max(dim=-1)  # (B, Na)
        order = best.argsort(dim=-1, descending=True)  # (B, Na)
        src_pos, keep_pos = order[:, :r], order[:, r:]  # A positions merged / kept
        dst_pos = dst.gather(1, src_pos)  # (B, r) B positions receiving them
        Na, Nb = a.shape[1], b.shape[1]

        xp = x[:, n:] * size[:, n:, None].to(x.dtype)  # size-weighted sums, merged then divided
        sp = size[:, n:]
        xa, xb = xp[:, 0::2], xp[:, 1::2]
        sa, sb = sp[:, 0::2], sp[:, 1::2]
        xb = xb.scatter_add(1, dst_pos[..., None].expand(-1, -1, D), gather_tokens(xa, src_pos))
        sb = sb.scatter_add(1, dst_pos, gather_tokens(sa, src_pos))
        xa, sa = gather_tokens(xa, keep_pos), gather_tokens(sa, keep_pos)
        merged = torch.cat([xa, xb], dim=1) / torch.cat([sa, sb], dim=1)[..., None].to(x.dtype)
        out = torch.cat([x[:, :n], merged], dim=1)  # (B, n + Na - r + Nb, D)
        new_size = torch.cat([size[:, :n], sa, sb], dim=1)
        index, source = state.index, state.source
        if index is not None and source is not None:
            ia, ib = index[:, n:][:, 0::2], index[:, n:][:, 1::2]
            index = torch.cat([index[:, :n], gather_tokens(ia, keep_pos), ib], dim=1)
            # new position of each old position: CLS stay; kept A follow; B after them; merged A
            # go to their B token
            kept_a = Na - r
            slot_a = torch.empty(B, Na, dtype=torch.long, device=x.device)
            slot_a.scatter_(1, keep_pos, n + torch.arange(kept_a, device=x.device).expand(B, -1))
            slot_a.scatter_(1, src_pos, n + kept_a + dst_pos)
            slot_b = (n + kept_a + torch.arange(Nb, device=x.device)).expand(B, -1)
            slot_p = torch.empty(B, patches, dtype=torch.long, device=x.device)
            slot_p[:, 0::2], slot_p[:, 1::2] = slot_a, slot_b
            cls_slots = torch.arange(n, device=x.device).expand(B, -1)
            source = remap(source, torch.cat([cls_slots, slot_p], dim=1))
        state = state._replace(size=new_size, index=index, source=source, virtual=virtual - r)
        return (
            out,
            mask,
            record_stage(state, self.name, "merge", n, (virtual - r) / max(virtual, 1)),
        )

    def after_attention(
        self,
        x: Tensor,
        mask: Tensor | None,
        state: TokenState | None,
        seen: Tensor | None,
        trace: bool,
    ) -> Tokens:
        assert seen is not None  # the layer's keys, as `need` asks
        return self(x, mask, state, seen, trace)

    def extra_repr(self) -> str:
        return f"r={self.r}, n_cls={self.n_cls}"


def mean_keys(
    attention: Attention,
    q: Tensor,
    k: Tensor,
    key_padding: Tensor | None,
    bias: Tensor | None,
    key_bias: Tensor | None,
) -> Tensor:
    """The keys of `attention` averaged over heads, ToMe's similarity metric.

    Shape: k `(B, K, S, E)` -> `(B, S, E)`.
    """
    return k.mean(dim=1)


def proportional_bias(size: Tensor) -> Tensor:
    """ToMe's proportional attention: log(size) added to every query's score of a key, so a
    token that stands for n tokens weighs as n. Shape: size `(B, S)` -> `(B, 1, 1, S)`."""
    return size.log()[:, None, None, :]


__all__ = ["TokenMerge", "mean_keys", "proportional_bias"]
