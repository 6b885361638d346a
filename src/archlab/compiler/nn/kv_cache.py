"""Decoding state: what each attention keeps between the calls that add tokens to a sequence.

Autoregressive decoding runs the model's own ``forward`` on the prompt (the prefill), then once
per new token on that token alone. While a decoding is installed, the modules on the decoded
sequence's path carry one of these objects and consult it:

- ``Clock``: where the tokens of the current call sit (``qpos``), shared by every cache of one
  decoding; absolute position tables read ``table_positions`` (each row counts from its first
  real token, so a left-padded prompt reads like an unpadded one).
- ``KVCache``: a softmax self-attention's keys and values at the key-value heads (grouped-query
  attention caches K heads, not H), preallocated for the decoding's capacity; a causal sliding
  window keeps a ring of ``window`` slots, so its memory stays constant however long the output.
  Every slot records its absolute position and whether it is a real token, so any mask pattern
  (causal, sliding window, prefix, block-local) and any position (rotary, ALiBi, T5's relative
  bias) is applied at the right offsets.
- ``CrossCache``: a cross-attention's keys and values of the memory, computed once.
- ``LinearState``: causal linear attention as its recurrent state, O(1) per token.
- ``Memo``: an encoder's output, computed at the prefill and reused by every step.

The prefill computes exactly what ``forward`` computes (the same kernels on the whole prompt)
and stores what later calls need; a step attends from its new tokens to the stored ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:  # the attentions import this module to consult their caches
    from archlab.compiler.nn.attention import Attention
    from archlab.compiler.nn.bias import RelativePositionBias
    from archlab.compiler.nn.linear_attention import LinearAttention


@dataclass
class Clock:
    """Where the tokens of the current decoding call sit, shared by every cache of a decoding.

    ``qpos`` `(T,)`: their absolute positions (0 for the first prompt token of every row).
    ``prefill``: whether this call runs the prompt (the caches are empty and compute what
    ``forward`` computes) or adds tokens to stored ones. ``static``: every cache attends over
    all its preallocated slots (empty ones masked), so the shapes of a step never change and it
    can run under ``torch.compile`` and CUDA graphs.
    ``shift`` `(B,)`: each row's left padding, or None; learned and sinusoidal position tables
    read ``qpos - shift`` (from 0 at the row's first real token); rotary, ALiBi and relative
    biases depend only on offsets, which the shift leaves unchanged. ``padded``: whether any key
    may be padding (a padded prompt, or a ``pad_id`` the new tokens may hit), which decides
    whether a step needs a mask.
    """

    qpos: Tensor
    shift: Tensor | None = None
    padded: bool = False
    prefill: bool = True
    static: bool = False

    def table_positions(self) -> Tensor:
        """Positions into an absolute table, `(1, T)` or `(B, T)` with the shift applied."""
        if self.shift is None:
            return self.qpos[None, :]
        return (self.qpos[None, :] - self.shift[:, None]).clamp(min=0)


class KVCache:
    """A softmax self-attention's keys, values, their positions and padding, in `capacity`
    preallocated slots (a ring of `window` slots for a causal sliding window).

    Buffers are allocated at the first write, in the dtype and on the device of the keys.
    Shapes: `k`, `v` `(B, K, C, E)`, `key_pos` `(C,)` (-1: empty), `key_real` `(B, C)`.
    """

    def __init__(
        self,
        clock: Clock,
        capacity: int,
        *,
        ring: bool = False,
        relative: RelativePositionBias | None = None,
    ) -> None:
        self.clock = clock
        self.capacity = capacity
        self.ring = ring
        self.relative = relative
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.key_pos: Tensor | None = None
        self.key_real: Tensor | None = None
        self.filled = 0  # slots holding keys (at most the capacity)

    def attend(
        self, attention: Attention, x: Tensor, key_padding: Tensor | None, bias: Tensor | None
    ) -> Tensor:
        """The attention of the new tokens `x` `(B, T, D)` to every stored token and to each
        other, storing their keys. -> heads `(B, H, T, E)`."""
        q, k, v = attention.project(x, None)
        qpos = self.clock.qpos
        q, k = attention.position.rotate_at(q, k, qpos)
        real = key_padding
        if self.clock.prefill:  # exactly forward's computation on the prompt
            out = attention.core(q, k, v, key_padding, bias)
            self.write(k, v, real, qpos)
            return out
        if self.ring and x.shape[1] > 1:  # keys a ring would overwrite are still needed
            keys, values, kpos, kreal = self.view()
            keys, values = torch.cat([keys, k], dim=2), torch.cat([values, v], dim=2)
            kpos = torch.cat([kpos, qpos])
            kreal = torch.cat([kreal, _real(real, k)], dim=1)
            self.write(k, v, real, qpos)
        else:
            self.write(k, v, real, qpos)
            keys, values, kpos, kreal = self.view()
        return self.attend_stored(attention, q, keys, values, kpos, kreal)

    def attend_stored(
        self,
        attention: Attention,
        q: Tensor,
        keys: Tensor,
        values: Tensor,
        kpos: Tensor,
        kreal: Tensor,
    ) -> Tensor:
        """Queries at the clock's positions against stored keys at `kpos`, with the mask
        pattern, padding and position bias those positions imply."""
        qpos = self.clock.qpos
        table = attention.position.bias_at(qpos, kpos)
        if attention.position.takes_table:
            if self.relative is None:
                raise ValueError("a relative_bias attention decodes with its stack's table")
            table = self.relative.at(qpos, kpos)
        plain = attention.mask.kind in ("none", "causal") and not self.ring
        fast = not self.clock.padded and not self.clock.static
        if plain and fast and table is None and q.shape[2] == 1:
            return attention.attend_dense(q, keys, values, None, None)  # every stored key
        allowed = attention.mask.allows(qpos[:, None], kpos[None, :]) & (kpos >= 0)  # (T, S)
        allowed = allowed[None, None] & kreal[:, None, None, :]  # (B, 1, T, S)
        return attention.attend_dense(q, keys, values, allowed, table)

    def write(self, k: Tensor, v: Tensor, real: Tensor | None, qpos: Tensor) -> None:
        """Store the keys and values of positions `qpos` (the last `capacity` of them in a
        ring, where the slot of position p is p mod capacity)."""
        if self.k is None:
            B, K, _, E = k.shape
            C = self.capacity
            # a dynamic decoding reads only written slots; a static one attends over every
            # slot (empty ones masked), so those must hold finite values: zeros
            fill = k.new_zeros if self.clock.static else k.new_empty
            self.k = fill(B, K, C, E)
            self.v = fill(B, K, C, v.shape[-1])
            self.key_pos = torch.full((C,), -1, dtype=torch.long, device=k.device)
            self.key_real = torch.zeros(B, C, dtype=torch.bool, device=k.device)
        assert self.v is not None and self.key_pos is not None and self.key_real is not None
        T = k.shape[2]
        real = _real(real, k)
        if self.ring:
            if self.capacity < T:
                k, v, real, qpos = (
                    k[:, :, -self.capacity :],
                    v[:, :, -self.capacity :],
                    real[:, -self.capacity :],
                    qpos[-self.capacity :],
                )
                T = self.capacity
            slots = qpos % self.capacity
        else:
            if not self.clock.static and self.filled + T > self.capacity:
                raise ValueError(
                    f"the decoding cache holds {self.capacity} tokens; {self.filled + T} needed"
                )
            slots = qpos
        self.k.index_copy_(2, slots, k)
        self.v.index_copy_(2, slots, v)
        self.key_pos.index_copy_(0, slots, qpos)
        self.key_real.index_copy_(1, slots, real)
        if not self.clock.static:  # (static decoding attends over every slot)
            self.filled = min(self.filled + T, self.capacity)

    def view(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The filled slots (every slot when static): keys, values `(B, K, S, E)`, positions
        `(S,)` (-1 for an empty slot), real `(B, S)`."""
        assert self.k is not None and self.v is not None
        assert self.key_pos is not None and self.key_real is not None
        n = self.capacity if self.clock.static else self.filled
        return self.k[:, :, :n], self.v[:, :, :n], self.key_pos[:n], self.key_real[:, :n]

    def reorder(self, index: Tensor) -> None:
        """Keep the rows `index` (beam search's surviving beams), in that order."""
        if self.k is not None:
            assert self.v is not None and self.key_real is not None
            self.k = self.k.index_select(0, index)
            self.v = self.v.index_select(0, index)
            self.key_real = self.key_real.index_select(0, index)


class CrossCache:
    """A cross-attention's keys and values of the memory and its padding, from the first call."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.padding: Tensor | None = None

    def attend(
        self, attention: Attention, x: Tensor, memory_padding: Tensor | None, memory: Tensor
    ) -> Tensor:
        """The new tokens `x` `(B, T, D)` attending to the memory. -> heads `(B, H, T, E)`."""
        if self.k is None:
            self.k, self.v = attention.project_memory(memory)
            self.padding = memory_padding
        assert self.v is not None
        q = attention.project_queries(x)
        if attention.mask.kind == "none":
            return attention.core(q, self.k, self.v, self.padding)
        S = self.k.shape[2]
        kpos = torch.arange(S, device=q.device)
        allowed = attention.mask.allows(self.clock.qpos[:, None], kpos[None, :])[None, None]
        if self.padding is not None:
            allowed = allowed & self.padding[:, None, None, :]
        return attention.attend_dense(q, self.k, self.v, allowed, None)

    def reorder(self, index: Tensor) -> None:
        if self.k is not None:
            assert self.v is not None
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)
            if self.padding is not None:
                self.padding = self.padding.index_select(0, index)


class LinearState:
    """Causal linear attention as a recurrence: the running sums S = sum_j phi(k_j) v_j^T
    `(B, H, E, Ev)` and z = sum_j phi(k_j) `(B, H, E)` over the tokens so far. Cross linear
    attention keeps the memory's sums, computed once."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.state: Tensor | None = None
        self.total: Tensor | None = None

    def attend(
        self,
        attention: LinearAttention,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        full: Callable[[Tensor, Tensor, Tensor], Tensor],
    ) -> Tensor:
        """Feature-mapped `q`, `k` (padded keys zeroed) and `v`, `(B, H, T, E)`, of the new
        tokens (or, for cross-attention, of the memory at the first call); `full` is the
        attention over a whole sequence, which the prefill runs. -> `(B, H, T, Ev)`."""
        if self.state is None:
            self.state = k.transpose(-2, -1) @ v  # (B, H, E, Ev)
            self.total = k.sum(dim=2)  # (B, H, E)
            return full(q, k, v)
        assert self.total is not None
        if not attention.causal:  # cross-attention: the memory's sums, as stored
            return _read(q, self.state, self.total)
        out = []
        for t in range(q.shape[2]):  # one token at a time: each sees itself and the past
            # in place: the tensors stay where a CUDA graph recorded them
            self.state.add_(k[:, :, t, :, None] * v[:, :, t, None, :])
            self.total.add_(k[:, :, t])
            out.append(_read(q[:, :, t : t + 1], self.state, self.total))
        return torch.cat(out, dim=2)

    def reorder(self, index: Tensor) -> None:
        if self.state is not None:
            assert self.total is not None
            self.state = self.state.index_select(0, index)
            self.total = self.total.index_select(0, index)


def _read(q: Tensor, state: Tensor, total: Tensor) -> Tensor:
    from archlab.compiler.nn.linear_attention import NORMALISER_EPS

    return (q @ state) / (q @ total[..., None] + NORMALISER_EPS)


class Memo:
    """A stack's output (and anything else of one call) kept from the prefill for the steps: an
    encoder whose memory every step of the decoder reads."""

    def __init__(self) -> None:
        self.value: Any = None

    def reorder(self, index: Tensor) -> None:
        if isinstance(self.value, Tensor):
            self.value = self.value.index_select(0, index)


def _real(real: Tensor | None, k: Tensor) -> Tensor:
    """The padding mask of new keys, all real when none is given. -> `(B, T)` bool."""
    if real is not None:
        return real
    return torch.ones(k.shape[0], k.shape[2], dtype=torch.bool, device=k.device)


__all__ = ["Clock", "CrossCache", "KVCache", "LinearState", "Memo"]
