"""The projections every attention shares: into heads, optional QK norm, and back out."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from archlab.compiler.nn.linear import Linear
from archlab.compiler.nn.norms import NormKind, make_norm


class HeadProjections(nn.Module):
    """Base of `Attention` and `LinearAttention`: splits into heads and merges them back.

    Self-attention (`kv_dim` None) projects with one fused `qkv` Linear, D -> (H + 2K) E, laid out
    queries, then keys, then values, each head-major. Cross-attention uses `q` (D -> H E) and `kv`
    (kv_dim -> 2K E, keys then values). `out` maps H E -> D. Grouped-query when K < H: query
    head h reads key/value head h // (H / K). `q_norm` and `k_norm` normalise each head over E
    (one norm shared by all heads) when `qk_norm` is set, and are `nn.Identity` otherwise.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        kv_heads: int | None,
        head_dim: int | None,
        kv_dim: int | None,
        bias: bool,
        qk_norm: NormKind | None,
        eps: float,
    ) -> None:
        super().__init__()
        kv_heads = heads if kv_heads is None else kv_heads
        if head_dim is None:
            if dim % heads:
                raise ValueError(f"heads ({heads}) must divide dim ({dim}) when head_dim is unset")
            head_dim = dim // heads
        if kv_heads < 1 or heads % kv_heads:
            raise ValueError(f"kv_heads ({kv_heads}) must divide heads ({heads})")
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.groups = heads // kv_heads
        self.is_cross = kv_dim is not None

        H, K, E = heads, kv_heads, head_dim
        if kv_dim is None:
            self.qkv = Linear(dim, (H + 2 * K) * E, bias=bias)
        else:
            self.q = Linear(dim, H * E, bias=bias)
            self.kv = Linear(kv_dim, 2 * K * E, bias=bias)
        self.q_norm = make_norm(qk_norm, E, eps) if qk_norm else nn.Identity()
        self.k_norm = make_norm(qk_norm, E, eps) if qk_norm else nn.Identity()
        self.out = Linear(H * E, dim, bias=bias)
        #: while a decoding is installed, what this attention keeps between calls
        #: (`archlab.compiler.nn.kv_cache`); None otherwise
        self.cache: Any = None
        #: while explaining, a list each call appends its attention probabilities `(B, H, T, S)`
        #: and operands q, k, v to, computed explicitly so that their gradient can be read;
        #: None otherwise
        self.record: list[Any] | None = None

    def project(self, x: Tensor, memory: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Queries from `x`; keys and values from `x`, or from `memory` in cross-attention.

        Shape:
            x `(B, T, D)`, memory `(B, S, Dm)` -> q `(B, H, T, E)`, k and v `(B, K, S, E)`.
        """
        if self.is_cross != (memory is not None):
            raise ValueError("cross-attention needs memory; self-attention takes none")
        if memory is not None:
            return self.project_queries(x), *self.project_memory(memory)
        B, T, _ = x.shape
        H, K, E = self.heads, self.kv_heads, self.head_dim
        q, k, v = self.qkv(x).split([H * E, K * E, K * E], dim=-1)
        q = q.view(B, T, H, E).transpose(1, 2)  # (B, H, T, E)
        k = k.view(B, T, K, E).transpose(1, 2)  # (B, K, T, E)
        v = v.view(B, T, K, E).transpose(1, 2)  # (B, K, T, E)
        return self.q_norm(q), self.k_norm(k), v

    def project_queries(self, x: Tensor) -> Tensor:
        """Cross-attention's queries alone (decoding reuses the memory's keys and values).

        Shape: x `(B, T, D)` -> `(B, H, T, E)`.
        """
        B, T, _ = x.shape
        return self.q_norm(self.q(x).view(B, T, self.heads, self.head_dim).transpose(1, 2))

    def project_memory(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention's keys and values. Shape: memory `(B, S, Dm)` -> `(B, K, S, E)` each."""
        B = memory.shape[0]
        K, E = self.kv_heads, self.head_dim
        k, v = self.kv(memory).chunk(2, dim=-1)
        k = k.view(B, -1, K, E).transpose(1, 2)  # (B, K, S, E)
        v = v.view(B, -1, K, E).transpose(1, 2)  # (B, K, S, E)
        return self.k_norm(k), v

    def repeat_kv(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Shape: `(B, K, S, E)` -> `(B, H, S, E)`; each key/value head serves H / K query heads."""
        if self.groups == 1:
            return k, v
        return k.repeat_interleave(self.groups, dim=1), v.repeat_interleave(self.groups, dim=1)

    def merge(self, y: Tensor) -> Tensor:
        """Shape: y `(B, H, T, E)` -> `(B, T, D)` through `out`."""
        B, H, T, E = y.shape
        return self.out(y.transpose(1, 2).reshape(B, T, H * E))  # (B, T, H*E) -> (B, T, D)
