"""Additive attention biases from positions: ALiBi and T5's bucketed relative bias.

Both produce an `(H, T, S)` tensor added to the attention scores before the softmax.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def alibi_slopes(heads: int) -> Tensor:
    """Per-head ALiBi slopes (Press et al. 2022), an `(H,)` float32 tensor.

    For a power of two n the slopes are r, r^2, ..., r^n with r = 2^(-8/n). Otherwise the first m
    heads, m the largest power of two below n, take the slopes for m, and the others take every
    other slope for 2m.
    """
    if heads < 1:
        raise ValueError(f"alibi needs at least one head (got {heads})")

    def geometric(n: int) -> list[float]:
        ratio = 2.0 ** (-8.0 / n)
        return [ratio ** (k + 1) for k in range(n)]

    base = 2 ** math.floor(math.log2(heads))
    slopes = geometric(base) + geometric(2 * base)[0::2][: heads - base]
    return torch.tensor(slopes, dtype=torch.float32)


def distances(T: int, S: int, device: torch.device | str | None = None) -> Tensor:
    """|i - j| for query i and key j, an `(T, S)` integer tensor."""
    i = torch.arange(T, device=device)[:, None]  # (T, 1)
    j = torch.arange(S, device=device)[None, :]  # (1, S)
    return (i - j).abs()


class AlibiBias(nn.Module):
    """ALiBi's linear distance penalty: bias[h, i, j] = -slope[h] * |i - j|.

    Under a causal mask this equals the paper's -slope * (i - j) on every visible key; the absolute
    distance also serves bidirectional and prefix masks. Only the `(H,)` slopes are stored (a
    non-persistent buffer); the bias is computed from aranges at each call.
    """

    def __init__(self, heads: int) -> None:
        super().__init__()
        self.slopes: Tensor
        self.register_buffer("slopes", alibi_slopes(heads), persistent=False)

    def forward(self, T: int, S: int) -> Tensor:
        """Shape: -> `(H, T, S)` on the slopes' device and dtype."""
        distance = distances(T, S, self.slopes.device).to(self.slopes.dtype)  # (T, S)
        return -self.slopes[:, None, None] * distance

    def at(self, qpos: Tensor, kpos: Tensor) -> Tensor:
        """The bias for queries at `qpos` `(T,)` and keys at `kpos` `(S,)`. -> `(H, T, S)`."""
        distance = (qpos[:, None] - kpos[None, :]).abs().to(self.slopes.dtype)
        return -self.slopes[:, None, None] * distance


def relative_position_bucket(
    offset: Tensor, *, buckets: int, max_distance: int, bidirectional: bool
) -> Tensor:
    """T5's bucket for each key-minus-query `offset` (integer tensor, any shape).

    Bidirectional: half the buckets for keys after the query, half for the rest. Within a half,
    distances below half its buckets get one bucket each; larger ones share logarithmically sized
    buckets up to `max_distance`, beyond which all fall into the last. Unidirectional: keys after
    the query all land in bucket 0.
    """
    if bidirectional:
        buckets //= 2
        side = (offset > 0).long() * buckets
        distance = offset.abs()
    else:
        side = torch.zeros_like(offset)
        distance = (-offset).clamp(min=0)
    exact = buckets // 2
    ratio = distance.clamp(min=exact).float() / exact  # >= 1, so the log is finite
    spread = torch.log(ratio) / math.log(max_distance / exact) * (buckets - exact)
    far = (exact + spread.long()).clamp(max=buckets - 1)
    return side + torch.where(distance < exact, distance, far)


class RelativePositionBias(nn.Module):
    """T5's learned relative position bias: `weight[bucket(j - i), h]`, one table per stack.

    Attributes:
        weight: `(buckets, H)` learned biases, initialised normal with std 0.02.
    """

    def __init__(
        self, heads: int, buckets: int = 32, max_distance: int = 128, bidirectional: bool = True
    ) -> None:
        super().__init__()
        smallest = 4 if bidirectional else 2
        if buckets < smallest:
            raise ValueError(
                f"relative_bias needs at least {smallest} buckets "
                f"(bidirectional={bidirectional}, got {buckets})"
            )
        exact = (buckets // 2 if bidirectional else buckets) // 2
        if max_distance <= exact:
            raise ValueError(
                f"relative_bias max_distance ({max_distance}) must exceed the {exact} distances "
                f"that get exact buckets with {buckets} buckets"
            )
        self.buckets = buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.weight = nn.Parameter(torch.empty(buckets, heads))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, T: int, S: int) -> Tensor:
        """Shape: -> `(H, T, S)` on the weight's device and dtype."""
        device = self.weight.device
        return self.at(torch.arange(T, device=device), torch.arange(S, device=device))

    def at(self, qpos: Tensor, kpos: Tensor) -> Tensor:
        """The bias for queries at `qpos` `(T,)` and keys at `kpos` `(S,)`. -> `(H, T, S)`."""
        offset = kpos[None, :] - qpos[:, None]
        bucket = relative_position_bucket(
            offset,  # (T, S): key position minus query position
            buckets=self.buckets,
            max_distance=self.max_distance,
            bidirectional=self.bidirectional,
        )
        return self.weight[bucket].permute(2, 0, 1)  # (T, S, H) -> (H, T, S)
