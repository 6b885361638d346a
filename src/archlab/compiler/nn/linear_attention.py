"""Linear attention (Katharopoulos et al. 2020): kernelised attention, linear in length.

Softmax attention's exp(q·k) is replaced by phi(q)·phi(k) for a positive feature map phi, so
y_i = phi(q_i) sum_j phi(k_j) v_j^T / (phi(q_i) · sum_j phi(k_j)) can sum over keys first. The
causal form takes prefix sums, computed chunk by chunk: exact products inside a chunk, plus an
(E x E) running state of the chunks before it.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.compiler.nn.norms import NormKind
from archlab.compiler.nn.projections import HeadProjections

FeatureMap = Literal["elu", "relu"]
CHUNK = 64  # causal chunk length: the intra-chunk products cost T * CHUNK, the states T / CHUNK E^2
NORMALISER_EPS = 1e-6


class LinearAttention(HeadProjections):
    """Multi-head linear attention, with the projections of `Attention` (`qkv` or `q`/`kv`, `out`).

    `feature_map` phi is `elu` (elu(x) + 1) or `relu`. `causal` makes query i see keys j <= i
    (self-attention only). Padded keys contribute nothing; a query that sees no real key outputs
    zeros. Half-precision inputs are computed in float32. `dropout` acts on the heads' outputs
    (there is no attention matrix to drop from).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        kv_heads: int | None = None,
        head_dim: int | None = None,
        kv_dim: int | None = None,
        bias: bool = True,
        qk_norm: NormKind | None = None,
        eps: float = 1e-6,
        feature_map: FeatureMap = "elu",
        causal: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            dim,
            heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            kv_dim=kv_dim,
            bias=bias,
            qk_norm=qk_norm,
            eps=eps,
        )
        if feature_map not in ("elu", "relu"):
            raise ValueError(f"unknown feature_map {feature_map!r}; choose elu or relu")
        if causal and kv_dim is not None:
            raise ValueError("causal linear attention needs self-attention (kv_dim is set)")
        self.feature_map = feature_map
        self.causal = causal
        self.drop = nn.Dropout(dropout) if dropout > 0.0 else nn.Identity()

    def forward(
        self,
        x: Tensor,
        key_padding: Tensor | None = None,
        memory: Tensor | None = None,
        bias: Tensor | None = None,
    ) -> Tensor:
        """Attend from `x` to itself, or to `memory` in cross-attention.

        Same call as `Attention.forward`; `bias` must be None (no in-attention positions).

        Shape:
            x `(B, T, D)`, key_padding `(B, S)`, memory `(B, S, Dm)` -> `(B, T, D)`.
        """
        if bias is not None:
            raise ValueError("linear attention takes no position bias")
        q, k, v = self.project(x, memory)  # (B, H, T, E), (B, K, S, E), (B, K, S, E)
        k, v = self.repeat_kv(k, v)  # (B, H, S, E)
        work = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
        q, k, v = self.phi(q.to(work)), self.phi(k.to(work)), v.to(work)
        if key_padding is not None:
            k = k * key_padding[:, None, :, None].to(work)  # padded keys: phi(k) = 0
        full = causal_linear_attention if self.causal else linear_attention
        if self.record is not None:  # explaining: the matrix written out and kept
            y = self.explicit(q, k, v)
        elif self.cache is None:
            y = full(q, k, v)
        else:  # decoding: the running sums (LinearState) stand in for the whole sequence
            y = self.cache.attend(self, q, k, v, full)
        return self.merge(self.drop(y.to(x.dtype)))

    def explicit(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """The attention as a matrix, A = phi(Q) phi(K)^T with each row divided by its sum
        (lower-triangular when causal), appended to ``record`` with the operands; A V is what
        ``forward`` computes by sums. Shape: feature-mapped q, k `(B, H, T|S, E)`, v -> y."""
        scores = q @ k.transpose(-2, -1)  # (B, H, T, S), >= 0
        if self.causal:
            scores = scores.tril()
        weights = scores / (scores.sum(dim=-1, keepdim=True) + NORMALISER_EPS)
        if weights.requires_grad:
            weights.retain_grad()
        assert self.record is not None
        self.record.append((weights, q, k, v))
        return weights @ v

    def phi(self, x: Tensor) -> Tensor:
        """The feature map: elu(x) + 1 or relu(x), elementwise."""
        return F.elu(x) + 1.0 if self.feature_map == "elu" else F.relu(x)

    def extra_repr(self) -> str:
        return (
            f"heads={self.heads}, kv_heads={self.kv_heads}, head_dim={self.head_dim}, "
            f"feature_map={self.feature_map}, causal={self.causal}"
        )


def linear_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Bidirectional linear attention on feature-mapped queries and keys.

    Shape:
        q `(B, H, T, E)`, k `(B, H, S, E)`, v `(B, H, S, Ev)` -> `(B, H, T, Ev)`.
    """
    state = k.transpose(-2, -1) @ v  # (B, H, E, Ev): sum_j phi(k_j) v_j^T
    total = k.sum(dim=2)[..., None]  # (B, H, E, 1): sum_j phi(k_j)
    return (q @ state) / (q @ total + NORMALISER_EPS)


def causal_linear_attention(q: Tensor, k: Tensor, v: Tensor, chunk: int = CHUNK) -> Tensor:
    """Causal linear attention (query i sees keys j <= i) by chunked prefix sums.

    The sequence is zero-padded to n chunks of length c = `chunk`; zero keys add nothing.

    Shape:
        q `(B, H, T, E)`, k `(B, H, T, E)`, v `(B, H, T, Ev)` -> `(B, H, T, Ev)`.
    """
    T = q.shape[2]
    n = -(-T // chunk)  # number of chunks
    pad = n * chunk - T
    q, k, v = (F.pad(t, (0, 0, 0, pad)).unflatten(2, (n, chunk)) for t in (q, k, v))
    # q, k: (B, H, n, c, E); v: (B, H, n, c, Ev)

    # Entering each chunk: sums over all earlier chunks (exclusive prefix sums).
    state = _exclusive_cumsum(k.transpose(-2, -1) @ v)  # (B, H, n, E, Ev)
    total = _exclusive_cumsum(k.sum(dim=3))[..., None]  # (B, H, n, E, 1)
    # Inside each chunk: exact products, causally masked.
    scores = (q @ k.transpose(-2, -1)).tril()  # (B, H, n, c, c)
    numerator = q @ state + scores @ v  # (B, H, n, c, Ev)
    denominator = q @ total + scores.sum(dim=-1, keepdim=True)  # (B, H, n, c, 1)
    y = numerator / (denominator + NORMALISER_EPS)
    return y.flatten(2, 3)[:, :, :T]  # (B, H, T, Ev)


def _exclusive_cumsum(x: Tensor) -> Tensor:
    """Prefix sums over dim 2 that exclude the current entry (the first is zero)."""
    shifted = torch.cat([torch.zeros_like(x[:, :, :1]), x[:, :, :-1]], dim=2)
    return shifted.cumsum(dim=2)
