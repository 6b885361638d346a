"""DynamicViT (Rao et al. 2021): a learned keep predictor, and attention under its keep policy.

In training every token stays and the stage's hard keep decision (the *policy*) weights the keys
of every later attention (`policy_attention`), so gradients reach the predictor; in inference the
kept tokens are gathered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.compiler.nn.attention import Attention
from archlab.compiler.nn.masks import dense_mask
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
    previous policy becomes the new policy, which later attentions apply (`policy_attention`), so
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


def policy_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    policy: Tensor,
    *,
    scale: float,
    allowed: Tensor | None = None,
    bias: Tensor | None = None,
    dropout: float = 0.0,
    training: bool = False,
) -> Tensor:
    """Softmax attention whose keys are weighted by DynamicViT's keep policy, in float32.

    A_ij = exp(s_ij - m_i) G_ij / sum_k exp(s_ik - m_i) G_ik with G_ij = policy_j for j != i and
    G_ii = 1 (a dropped token still attends to itself), m_i the row's largest score among the keys
    it keeps. A dropped key contributes exactly zero, yet the policy's straight-through gradient
    reaches the predictors through G. Equals softmax attention over the kept keys alone.

    Shape: q `(B, H, T, E)`, k and v `(B, H, T, E)`, policy `(B, T)`, allowed `(B|1, 1, T|1, T)`
    bool, bias `(H|B, ..., T, T)` additive -> `(B, H, T, E)`.
    """
    T = q.shape[2]
    dtype = q.dtype
    scores = (q.float() @ k.float().transpose(-2, -1)) * scale  # (B, H, T, T)
    if bias is not None:
        scores = scores + bias.float()
    eye = torch.eye(T, device=q.device, dtype=torch.float32)
    gate = policy.float()[:, None, None, :] * (1 - eye) + eye  # (B, 1, T, T)
    kept = gate.detach() > 0
    if allowed is not None:
        kept = kept & allowed
        scores = scores.masked_fill(~allowed, float("-inf"))
    top = scores.masked_fill(~kept, float("-inf")).amax(dim=-1, keepdim=True).detach()
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    # a dropped key above the kept maximum would overflow exp; its weight is 0 either way
    weights = torch.exp((scores - top).clamp(max=30.0)) * gate  # (B, H, T, T)
    weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    weights = F.dropout(weights, dropout, training)
    return (weights @ v.float()).to(dtype)


def policy_core(
    attention: Attention,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_padding: Tensor | None,
    bias: Tensor | None,
    key_bias: Tensor | None,
    policy: Tensor,
) -> Tensor:
    """`attention`'s heads under a keep `policy` `(B, S)`: `policy_attention` with the layer's
    mask, position bias and `key_bias`, in place of its kernel (`Attention.core`'s shapes)."""
    T, S = q.shape[2], k.shape[2]
    allowed = dense_mask(attention.mask, T, S, key_padding, q.device)
    table = attention.score_bias(T, S, bias, key_bias, q.dtype)
    kr, vr = attention.repeat_kv(k, v)
    return policy_attention(
        q,
        kr,
        vr,
        policy,
        scale=attention.scale,
        allowed=allowed,
        bias=table,
        dropout=attention.attn_dropout,
        training=attention.training,
    )


__all__ = ["DynamicPrune", "KeepPredictor", "policy_attention", "policy_core"]
