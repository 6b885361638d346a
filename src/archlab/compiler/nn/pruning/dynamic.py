"""DynamicViT (Rao et al. 2021): a learned keep predictor, and attention under its keep policy.

In training every token stays and the stage's hard keep decision (the *policy*) weights the keys
of every later attention (`policy.policy_core`), so gradients reach the predictor; in inference the
kept tokens are gathered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.compiler.nn.pruning.stage import Tokens, TokenStage
from archlab.compiler.nn.pruning.state import (
    TokenState,
    keep_rows,
    kept_count,
    record_stage,
    start_state,
)

if TYPE_CHECKING:
    from archlab.specs.analysis import PruneStage


class KeepPredictor(nn.Module):
    """DynamicViT's prediction module: log-probabilities (keep, drop) for each patch token.

    LayerNorm -> Linear(D, D) -> GELU; the first D/2 channels are the token's local feature, the
    other D/2 are averaged over the tokens still kept (weighted by the policy) into a global
    feature; [local, global] -> Linear(D, D/2) -> GELU -> Linear(D/2, D/4) -> GELU -> Linear(D/4,
    2) -> log-softmax. Parameters: `input` (0: LayerNorm, 1: Linear) and `output` (0, 2, 4: the
    Linears), so state-dict keys read `encoder.prune.3.predictor.input.1.weight`.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        if dim < 4:
            raise ValueError(f"a keep predictor needs a width of at least 4, not {dim}")
        self.input = nn.Sequential(nn.LayerNorm(dim, eps=eps), nn.Linear(dim, dim), nn.GELU())
        half = dim // 2
        self.split = half
        self.output = nn.Sequential(
            nn.Linear(dim, half),
            nn.GELU(),
            nn.Linear(half, dim // 4),
            nn.GELU(),
            nn.Linear(dim // 4, 2),
        )

    def forward(self, x: Tensor, policy: Tensor) -> Tensor:
        """Shape: x `(B, N, D)` patch tokens, policy `(B, N)` (1 kept) -> `(B, N, 2)` log-probs."""
        h = self.input(x)  # (B, N, D)
        local, glob = h[..., : self.split], h[..., self.split :]
        w = policy.unsqueeze(-1).to(h.dtype)  # (B, N, 1)
        glob = (glob * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1e-6)
        h = torch.cat([local, glob.expand(-1, x.shape[1], -1)], dim=-1)  # (B, N, D)
        return F.log_softmax(self.output(h), dim=-1)


class DynamicPrune(TokenStage):
    """A DynamicViT stage: `predictor` scores the patch tokens, then keep `keep` of them.

    Training: every token stays; a hard Gumbel-softmax sample (straight-through) multiplied by the
    previous policy becomes the new policy, which later attentions apply (`policy.policy_core`), so
    a dropped token stays dropped and gradients reach the predictor. Inference: the top-k patch
    tokens by keep score are gathered (in score order) behind the CLS tokens; padded tokens go
    first.
    """

    @classmethod
    def from_plan(cls, stage: PruneStage, name: str) -> DynamicPrune:
        assert stage.keep is not None
        return cls(stage.dim, stage.keep, stage.n_cls, name)

    def __init__(self, dim: int, keep: float, n_cls: int, name: str, eps: float = 1e-6) -> None:
        super().__init__()
        self.predictor = KeepPredictor(dim, eps)
        self.keep, self.n_cls, self.name = keep, n_cls, name

    def forward(
        self, x: Tensor, mask: Tensor | None, state: TokenState | None, trace: bool = False
    ) -> tuple[Tensor, Tensor | None, TokenState]:
        """Shape: x `(B, T, D)`, mask `(B, T)` -> `(B, T', D)`, `(B, T')`, state."""
        state = start_state(x, state, trace)
        n = self.n_cls
        B, T = x.shape[:2]
        patches = T - n
        virtual = patches if state.virtual is None else state.virtual
        k = kept_count(self.keep, virtual)
        if self.training:
            prev = state.policy
            if prev is None:
                prev = x.new_ones(B, T, dtype=torch.float32)
                if mask is not None:
                    prev = prev * mask.float()
            scores = self.predictor(x[:, n:], prev[:, n:])  # (B, N, 2)
            hard = F.gumbel_softmax(scores.float(), hard=True)[..., 0]  # (B, N): 1 keep
            policy = torch.cat([prev[:, :n], hard * prev[:, n:]], dim=1)  # (B, T)
            state = state._replace(policy=policy, virtual=k)
            return x, mask, record_stage(state, self.name, "dynamic", n, k / patches)
        live = x.new_ones(B, patches) if mask is None else mask[:, n:].to(x.dtype)
        scores = self.predictor(x[:, n:], live)[..., 0]  # (B, N): keep log-prob
        if mask is not None:
            scores = scores.masked_fill(~mask[:, n:], float("-inf"))
        keep = scores.topk(min(k, patches), dim=1).indices  # (B, k)
        x, mask, state = keep_rows(x, mask, state, n, keep)
        state = state._replace(virtual=k)
        return x, mask, record_stage(state, self.name, "dynamic", n, k / patches)

    def before_layer(
        self, x: Tensor, mask: Tensor | None, state: TokenState | None, trace: bool
    ) -> Tokens:
        return self(x, mask, state, trace)

    def extra_repr(self) -> str:
        return f"keep={self.keep}, n_cls={self.n_cls}"


__all__ = ["DynamicPrune", "KeepPredictor"]
