"""Output heads: pooling a sequence, classifying it, or predicting tokens."""

from __future__ import annotations

from typing import get_args

import torch
from torch import Tensor, nn

from archlab.compiler.nn.embeddings import TokenEmbedding
from archlab.compiler.nn.linear import linear
from archlab.specs.models import PoolMode


class Pool(nn.Module):
    """Sequence to vector: the first CLS token, the first position whatever it holds (a
    tokenizer's `[CLS]`), the second CLS token (`distill`: DeiT's distillation token), or the
    mean, max or last of the other tokens.

    `mean` and `max` skip the `n_cls` leading tokens (as timm does) and padding; `last` is the last
    real token. A sample with no real token pools to zeros.
    """

    def __init__(self, mode: PoolMode, n_cls: int = 0) -> None:
        super().__init__()
        if mode not in get_args(PoolMode):
            raise ValueError(f"unknown pool mode {mode!r}; choose {', '.join(get_args(PoolMode))}")
        if mode == "cls" and n_cls < 1:
            raise ValueError("pool mode cls needs a CLS token (n_cls is 0)")
        if mode == "distill" and n_cls < 2:
            raise ValueError(f"pool mode distill needs two CLS tokens (n_cls is {n_cls})")
        self.mode = mode
        self.n_cls = n_cls

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Shape: x `(B, N, D)`, mask `(B, N)` -> `(B, D)`."""
        if self.mode in ("cls", "first"):
            return x[:, 0]
        if self.mode == "distill":
            return x[:, 1]
        if self.mode == "last":
            return self._last(x, mask)
        x = x[:, self.n_cls :]  # (B, N', D): patch tokens only
        if mask is None:
            return x.mean(dim=1) if self.mode == "mean" else x.amax(dim=1)
        real = mask[:, self.n_cls :, None]  # (B, N', 1)
        if self.mode == "mean":
            count = real.sum(dim=1).clamp(min=1)  # (B, 1)
            return (x * real).sum(dim=1) / count
        largest = x.masked_fill(~real, float("-inf")).amax(dim=1)  # (B, D)
        return largest.masked_fill(~real.any(dim=1), 0.0)

    def _last(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if mask is None:
            return x[:, -1]
        position = torch.arange(x.shape[1], device=x.device)  # (N,)
        last = torch.where(mask, position, -1).amax(dim=1)  # (B,), -1 when nothing is real
        pooled = x[torch.arange(x.shape[0], device=x.device), last.clamp(min=0)]  # (B, D)
        return pooled.masked_fill((last < 0)[:, None], 0.0)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, n_cls={self.n_cls}"


class Classify(nn.Module):
    """`pool`, an optional `pre_logits` Linear followed by tanh, then a Linear classifier `fc`.

    `mode` None means the input is already pooled (a `pool` node upstream): `pool` is then None.
    `pre_dim` None means no pre-logits layer (`pre_logits` is None and `fc` reads the pooled
    vector); otherwise `pre_logits` is `Linear(dim, pre_dim)` (BERT's pooler).
    """

    def __init__(
        self,
        dim: int,
        classes: int,
        mode: PoolMode | None,
        n_cls: int = 0,
        pre_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.pool = None if mode is None else Pool(mode, n_cls)
        self.pre_logits = None if pre_dim is None else nn.Linear(dim, pre_dim)
        self.fc = nn.Linear(dim if pre_dim is None else pre_dim, classes)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Shape: x `(B, N, D)`, mask `(B, N)` (or pooled x `(B, D)`) -> logits `(B, classes)`."""
        return self.logits(x if self.pool is None else self.pool(x, mask))

    def logits(self, pooled: Tensor) -> Tensor:
        """Shape: pooled `(B, D)` -> logits `(B, classes)`."""
        if self.pre_logits is not None:
            pooled = torch.tanh(self.pre_logits(pooled))
        return self.fc(pooled)


class LMHead(nn.Module):
    """Per-token vocabulary logits, x @ weight^T, with no bias.

    With `tied`, `weight` is the embedding's own Parameter (one tensor, listed once by
    `named_parameters`); otherwise a fresh `(V, D)` weight initialised normal with std 0.02.
    `scale`, when set, multiplies x first (T5 rescales its tied head's input by D**-0.5).
    `last_only`: set while a decoding is installed (``compiler.decoding``), which reads only the
    last position's logits; the head then computes only those, sparing the prefill a
    `(B, T, V)` product of which it keeps `(B, 1, V)`.
    """

    last_only: bool | None = None
    #: set while decoding: few-row products run weight-first (``compiler.nn.linear``)
    weight_first = False

    def __init__(
        self, dim: int, vocab: int, tied: TokenEmbedding | None = None, scale: float | None = None
    ) -> None:
        super().__init__()
        self.scale = scale
        if tied is None:
            self.weight = nn.Parameter(torch.empty(vocab, dim))
            nn.init.normal_(self.weight, std=0.02)
        else:
            if tuple(tied.weight.shape) != (vocab, dim):
                raise ValueError(
                    f"lm_head ({vocab} x {dim}) cannot tie an embedding of shape "
                    f"{tuple(tied.weight.shape)}"
                )
            self.weight = tied.weight

    def forward(self, x: Tensor) -> Tensor:
        """Shape: x `(B, T, D)` -> logits `(B, T, V)` (`(B, 1, V)` with `last_only`)."""
        if self.last_only:
            x = x[:, -1:]
        return linear(
            x if self.scale is None else x * self.scale, self.weight, None, self.weight_first
        )
