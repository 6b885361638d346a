"""Softmax attention and the one place that chooses its kernel.

Every kernel computes the same function, softmax(QK^T * scale + bias + mask) V (scale 1/sqrt(E)
unless set), and a query that may see no key outputs zeros:
- `reference`: that formula written out; the baseline the others are tested against.
- `sdpa`: `F.scaled_dot_product_attention` with `is_causal` or no mask (flash / efficient kernels);
  a padding mask at run time switches it to a dense mask.
- `sdpa_mask`: SDPA with a dense bool mask, or a float mask when there is a position bias.
- `flex`: FlexAttention, with a block mask for the pattern and padding and a `score_mod` for the
  position bias. Fused under `torch.compile` on CUDA; eager elsewhere, and forward-only on CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from archlab.compiler.nn.attention_position import AttentionPosition, NoPosition, Position
from archlab.compiler.nn.masks import NO_MASK, MaskPattern, dense_mask
from archlab.compiler.nn.norms import NormKind
from archlab.compiler.nn.projections import HeadProjections

try:
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # torch < 2.5
    FLEX_IMPORTABLE = False
else:
    FLEX_IMPORTABLE = True

KERNELS = ("sdpa", "sdpa_mask", "flex", "reference", "linear")
_FLEX_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# SDPA's native GQA (`enable_gqa`) runs fused only in the flash kernel: half precision, no mask.
# Elsewhere it falls back to the unfused math kernel, so repeating K/V heads is faster there.
_FLASH_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class KernelChoice:
    """The attention kernel an `Attention` runs and why it was chosen (shown in summaries)."""

    name: str
    reason: str


def kernel_problem(
    name: str, *, mask: MaskPattern, position: Position | None, has_dropout: bool
) -> str | None:
    """Why softmax kernel `name` cannot run this attention, or None when it can."""
    if name not in KERNELS:
        return f"unknown kernel {name!r}; choose one of {', '.join(KERNELS)}"
    if name == "linear":
        return "linear is the kernel of linear attention, not of softmax attention"
    if name == "sdpa" and not mask.is_plain:
        return f"sdpa applies only the masks none and causal (got {mask.kind}); use sdpa_mask"
    if name == "sdpa" and position in ("alibi", "relative_bias"):
        return f"sdpa takes no additive bias (position {position}); use sdpa_mask or flex"
    if name == "flex" and not FLEX_IMPORTABLE:
        return "FlexAttention is not importable (torch < 2.5)"
    if name == "flex" and has_dropout:
        return "FlexAttention has no attention dropout"
    return None


def _why_not_flex(device: torch.device, dtype: torch.dtype | None, has_dropout: bool) -> str | None:
    if not FLEX_IMPORTABLE:
        return "FlexAttention is not importable (torch < 2.5)"
    if device.type != "cuda":
        return f"FlexAttention needs CUDA to be fused (device is {device.type})"
    if has_dropout:
        return "FlexAttention has no attention dropout"
    if dtype is not None and dtype not in _FLEX_DTYPES:
        return f"FlexAttention kernels take float16, bfloat16 or float32 (dtype is {dtype})"
    return None


def choose_kernel(
    *,
    kind: str,
    mask: MaskPattern,
    position: Position | None,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    has_dropout: bool,
    override: str | None = None,
) -> KernelChoice:
    """Choose the attention kernel for `kind` ("softmax" or "linear") on `device` and `dtype`.

    Order: `linear` for linear attention; an `override` (any of `KERNELS` that can run the
    attention, else ValueError); `sdpa` when SDPA needs no mask tensor (masks none/causal,
    positions none/rotary); `flex` when FlexAttention can be fused (CUDA, no dropout); otherwise
    `sdpa_mask`, whose reason says why flex was not taken. `device=None` means CPU. An override
    of `flex` on CPU runs FlexAttention eagerly and forward-only (it has no CPU backward).
    """
    if kind == "linear":
        if override not in (None, "linear"):
            raise ValueError(f"linear attention has only the kernel linear (override {override!r})")
        return KernelChoice("linear", "linear attention: phi(Q) (phi(K)^T V), linear in length")
    if kind != "softmax":
        raise ValueError(f"unknown attention kind {kind!r}; choose softmax or linear")
    if override is not None:
        problem = kernel_problem(override, mask=mask, position=position, has_dropout=has_dropout)
        if problem is not None:
            raise ValueError(f"kernel override {override!r} cannot run this attention: {problem}")
        return KernelChoice(override, "requested by override")
    if mask.is_plain and position in (None, "rotary"):
        how = "is_causal" if mask.kind == "causal" else "no mask"
        return KernelChoice(
            "sdpa",
            f"SDPA with {how}; a padding mask at run time switches it to a dense (B, 1, T, S) mask",
        )
    needs = f"mask {mask.kind}" if not mask.is_plain else f"position {position}"
    why_not = _why_not_flex(torch.device(device or "cpu"), dtype, has_dropout)
    if why_not is None:
        return KernelChoice("flex", f"{needs}: FlexAttention with a block mask and score_mod")
    return KernelChoice("sdpa_mask", f"{needs} needs a mask tensor; {why_not}")


MaskMod = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def _mask_mod(pattern: MaskPattern, key_padding: Tensor | None) -> MaskMod:
    """FlexAttention's mask_mod(b, h, q_idx, kv_idx) for a pattern and optional padding."""
    if key_padding is None:
        return lambda b, h, q_idx, kv_idx: pattern.allows(q_idx, kv_idx)
    if pattern.kind == "none":
        return lambda b, h, q_idx, kv_idx: key_padding[b, kv_idx]
    return lambda b, h, q_idx, kv_idx: pattern.allows(q_idx, kv_idx) & key_padding[b, kv_idx]


class AttentionHook:
    """What a caller changes in one attention call, without `Attention` knowing why (token
    pruning, `archlab.compiler.nn.pruning`, weights or masks the keys and reads the attention).

    This base runs the attention unchanged and reads nothing.
    """

    def attend(
        self,
        attention: Attention,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        key_padding: Tensor | None,
        bias: Tensor | None,
    ) -> Tensor:
        """The attention on projected heads (`Attention.core`'s shapes)."""
        return attention.core(q, k, v, key_padding, bias)

    def read(
        self,
        attention: Attention,
        q: Tensor,
        k: Tensor,
        key_padding: Tensor | None,
        bias: Tensor | None,
    ) -> Tensor | None:
        """What the caller takes from this attention besides its output, or None."""
        return None


class Attention(HeadProjections):
    """Multi-head softmax attention: self-attention, or cross-attention to a memory.

    Projections, grouped-query heads and QK norm come from `HeadProjections` (`qkv`, or `q` and
    `kv`; `out`; `q_norm`, `k_norm`). Positions: one `position` part (`attention_position`:
    none, rotary, ALiBi, or relative_bias, for which the stack hands its shared `(H, T, S)` table
    to `forward` as `bias`). `mask` is the structural pattern; padding comes with each call.
    `max_len` bounds the query length. The kernel is fixed at construction (see `choose_kernel`)
    and kept as `self.kernel`; `dropout` acts on the attention weights. `scale` multiplies the
    scores (default 1/sqrt(E); T5 uses 1, its scale folded into the query weights).
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
        dropout: float = 0.0,
        scale: float | None = None,
        mask: MaskPattern = NO_MASK,
        position: AttentionPosition | None = None,
        max_len: int,
        kernel: KernelChoice,
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
        position = position if position is not None else NoPosition()
        if kv_dim is not None and position.kind is not None:
            raise ValueError("cross-attention takes no in-attention position")
        problem = kernel_problem(
            kernel.name, mask=mask, position=position.kind, has_dropout=dropout > 0
        )
        if problem is not None:
            raise ValueError(f"kernel {kernel.name!r} cannot run this attention: {problem}")

        self.kernel = kernel
        self.mask = mask
        self.max_len = max_len
        self.scale = scale if scale is not None else self.head_dim**-0.5
        self.attn_dropout = dropout
        self.position = position
        self._block_masks: dict[tuple[int, int, torch.device], BlockMask | None] = {}

    def forward(
        self,
        x: Tensor,
        key_padding: Tensor | None = None,
        memory: Tensor | None = None,
        bias: Tensor | None = None,
    ) -> Tensor:
        """Attend from `x` to itself, or to `memory` in cross-attention.

        Args:
            x: the queries' sequence.
            key_padding: True for real keys (of `x`, or of `memory` in cross-attention).
            memory: the keys' and values' sequence; required for, and only for, cross-attention.
            bias: the stack's relative position table; required for, and only for, relative_bias.

        Shape:
            x `(B, T, D)`, key_padding `(B, S)`, memory `(B, S, Dm)`, bias `(H, T, S)`
            -> `(B, T, D)`; S = T in self-attention.
        """
        return self.attend(x, key_padding, memory, bias)[0]

    def attend(
        self,
        x: Tensor,
        key_padding: Tensor | None = None,
        memory: Tensor | None = None,
        bias: Tensor | None = None,
        hook: AttentionHook | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """`forward` through a `hook`, which runs the attention on the projected heads and may
        read from it (token pruning: `archlab.compiler.nn.pruning`).

        Returns: the output `(B, T, D)` and what the hook read (None without a hook).
        """
        if self.cache is not None:  # decoding: the cache attends and keeps the keys
            if memory is None:
                return self.merge(self.cache.attend(self, x, key_padding, bias)), None
            return self.merge(self.cache.attend(self, x, key_padding, memory)), None
        if self.position.takes_table != (bias is not None):
            raise ValueError("a relative_bias attention needs bias; others take none")
        if x.shape[1] > self.max_len:
            raise ValueError(
                f"sequence length {x.shape[1]} exceeds attention max_len {self.max_len}"
            )
        q, k, v = self.project(x, memory)  # (B, H, T, E), (B, K, S, E), (B, K, S, E)
        q, k = self.position.rotate(q, k)
        if hook is None:
            return self.merge(self.core(q, k, v, key_padding, bias)), None
        y = hook.attend(self, q, k, v, key_padding, bias)
        return self.merge(y), hook.read(self, q, k, key_padding, bias)  # (B, T, D), ...

    def core(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        key_padding: Tensor | None = None,
        bias: Tensor | None = None,
        key_bias: Tensor | None = None,
    ) -> Tensor:
        """The attention itself on projected heads, through the kernel chosen at construction.

        `key_bias` is added to every query's scores of a key (ToMe's log size); it needs a
        dense mask, so it takes SDPA with a float mask (or the reference kernel).

        Shape: q `(B, H, T, E)`, k and v `(B, K, S, E)`, key_padding `(B, S)`, bias `(H, T, S)`,
        key_bias `(B, 1, 1, S)` -> `(B, H, T, E)`. (`attend` projects, calls this, and merges
        the heads.)
        """
        if self.record is not None:  # explaining: the matrix written out and kept
            return self.explicit(q, k, v, key_padding, bias, key_bias)
        T, S = q.shape[2], k.shape[2]
        name = self.kernel.name
        if name == "flex" and key_bias is None:
            return self._flex(q, k, v, key_padding, bias)
        if name == "sdpa" and key_padding is None and key_bias is None:
            return self._sdpa(q, k, v, None, is_causal=self.mask.kind == "causal")
        allowed = self._allowed(T, S, key_padding, q.device)  # (B|1, 1, T|1, S)
        table = self.score_bias(T, S, bias, key_bias, q.dtype)  # (H|B, ..., T|1, S)
        attend = self._reference if name == "reference" else self._sdpa_dense
        # every pattern lets a query see its own position: without padding, in
        # self-attention, no row is empty and the unblocking pass can be skipped
        return attend(q, k, v, allowed, table, may_be_empty=key_padding is not None or T != S)

    def explicit(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        key_padding: Tensor | None = None,
        bias: Tensor | None = None,
        key_bias: Tensor | None = None,
    ) -> Tensor:
        """The attention with its probabilities written out and appended to ``record``
        with the operands (explaining reads them and their gradient), whatever kernel this layer
        runs otherwise.

        Shape: as ``core``; the record gets (probabilities `(B, H, T, S)`, q, k, v).
        """
        T, S = q.shape[2], k.shape[2]
        allowed = dense_mask(self.mask, T, S, key_padding, q.device)
        table = self.score_bias(T, S, bias, key_bias, q.dtype)
        weights = self.probabilities(q, k, allowed, table)
        if weights.requires_grad:
            weights.retain_grad()
        assert self.record is not None
        self.record.append((weights, q, k, v))
        _, v = self.repeat_kv(v, v)
        return F.dropout(weights, self.attn_dropout, self.training) @ v

    def probabilities(
        self, q: Tensor, k: Tensor, allowed: Tensor | None, bias: Tensor | None
    ) -> Tensor:
        """softmax(QK^T * scale + bias) over the allowed keys; a query that sees no key gets
        zeros. Shape: q `(B, H, T, E)`, k `(B, K, S, E)` -> `(B, H, T, S)`."""
        k, _ = self.repeat_kv(k, k)
        scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, H, T, S)
        if bias is not None:
            scores = scores + bias
        if allowed is None:
            return scores.softmax(dim=-1)
        allowed, sees = _unblock_empty_rows(allowed)
        return scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1).masked_fill(~sees, 0.0)

    def attend_dense(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        allowed: Tensor | None,
        bias: Tensor | None,
    ) -> Tensor:
        """The attention with an explicit mask and bias (decoding against stored keys): the
        reference kernel when it was chosen, else SDPA.

        Shape: q `(B, H, T, E)`, k and v `(B, K, S, E)`, allowed `(B|1, 1, T, S)` bool, bias
        `(H, T, S)` -> `(B, H, T, E)`; a query that sees no key outputs zeros.
        """
        attend = self._reference if self.kernel.name == "reference" else self._sdpa_dense
        return attend(q, k, v, allowed, bias, may_be_empty=allowed is not None)

    def score_bias(
        self,
        T: int,
        S: int,
        bias: Tensor | None,
        key_bias: Tensor | None,
        dtype: torch.dtype,
    ) -> Tensor | None:
        """The additive score bias: the position's `(H, T, S)` (ALiBi, or the stack's relative
        table `bias`), plus `key_bias` `(B, 1, 1, S)`; None when there is neither."""
        bias = self.position.bias(T, S, bias)
        bias = None if bias is None else bias.to(dtype)  # (H, T, S)
        if key_bias is None:
            return bias
        key_bias = key_bias.to(dtype)  # (B, 1, 1, S)
        return key_bias if bias is None else bias + key_bias

    def _allowed(
        self, T: int, S: int, key_padding: Tensor | None, device: torch.device
    ) -> Tensor | None:
        """`dense_mask` for this layer; the structural part alone comes from a small cache shared
        by every layer (pattern, T, S, device) in eager mode, and is rebuilt inside the graph
        under torch.compile."""
        if key_padding is not None or self.mask.kind == "none" or torch.compiler.is_compiling():
            return dense_mask(self.mask, T, S, key_padding, device)
        return _structural_mask(self.mask, T, S, device)

    def _reference(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        allowed: Tensor | None,
        bias: Tensor | None,
        *,
        may_be_empty: bool = True,
    ) -> Tensor:
        k, v = self.repeat_kv(k, v)  # (B, H, S, E)
        scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, H, T, S)
        if bias is not None:
            scores = scores + bias
        if allowed is None:
            weights = scores.softmax(dim=-1)
        elif not may_be_empty:
            weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
        else:
            allowed, sees = _unblock_empty_rows(allowed)
            weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
            weights = weights.masked_fill(~sees, 0.0)
        weights = F.dropout(weights, self.attn_dropout, self.training)
        return weights @ v  # (B, H, T, E)

    def _sdpa(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool
    ) -> Tensor:
        native_gqa = self.groups > 1 and mask is None and q.dtype in _FLASH_DTYPES
        if not native_gqa:
            k, v = self.repeat_kv(k, v)
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
            is_causal=is_causal,
            scale=self.scale,
            enable_gqa=native_gqa,
        )

    def _sdpa_dense(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        allowed: Tensor | None,
        bias: Tensor | None,
        *,
        may_be_empty: bool = True,
    ) -> Tensor:
        if allowed is None:
            return self._sdpa(q, k, v, bias, is_causal=False)
        if not may_be_empty:
            mask = allowed if bias is None else bias.masked_fill(~allowed, float("-inf"))
            return self._sdpa(q, k, v, mask, is_causal=False)
        allowed, sees = _unblock_empty_rows(allowed)
        mask = allowed if bias is None else bias.masked_fill(~allowed, float("-inf"))
        return self._sdpa(q, k, v, mask, is_causal=False).masked_fill(~sees, 0.0)

    def _flex(
        self, q: Tensor, k: Tensor, v: Tensor, key_padding: Tensor | None, bias: Tensor | None
    ) -> Tensor:
        score_mod = self.position.score_mod(bias, q.dtype)
        block_mask = self._block_mask(q.shape[2], k.shape[2], key_padding, q.device)
        return flex_attention(
            q,
            k,
            v,
            score_mod=score_mod,
            block_mask=block_mask,
            scale=self.scale,
            enable_gqa=self.groups > 1,
        )

    def _block_mask(
        self, T: int, S: int, key_padding: Tensor | None, device: torch.device
    ) -> BlockMask | None:
        """The block mask for T queries and S keys, cached per (T, S, device) unless padded.

        Padding differs per batch, so a padded call builds its own mask. Under torch.compile the
        mask is built inside the graph (no Python-side mutation); in eager it is cached.
        """
        if key_padding is not None:
            mod = _mask_mod(self.mask, key_padding)
            return create_block_mask(mod, key_padding.shape[0], None, T, S, device=device)
        if self.mask.kind == "none":
            return None
        if torch.compiler.is_compiling():
            return create_block_mask(_mask_mod(self.mask, None), None, None, T, S, device=device)
        key = (T, S, device)
        if key not in self._block_masks:
            mod = _mask_mod(self.mask, None)
            self._block_masks[key] = create_block_mask(mod, None, None, T, S, device=device)
        return self._block_masks[key]

    def extra_repr(self) -> str:
        return (
            f"heads={self.heads}, kv_heads={self.kv_heads}, head_dim={self.head_dim}, "
            f"mask={self.mask.kind}, kernel={self.kernel.name}"
        )


@functools.lru_cache(maxsize=8)
def _structural_mask(pattern: MaskPattern, T: int, S: int, device: torch.device) -> Tensor | None:
    """The pattern's (1, 1, T, S) bool mask, shared by all layers with the same pattern: a
    sliding window at T = 8192 is 64 MiB, built once instead of per layer and per call."""
    with torch.inference_mode(False):  # a normal tensor: training may save it for backward
        return dense_mask(pattern, T, S, None, device)


def _unblock_empty_rows(allowed: Tensor) -> tuple[Tensor, Tensor]:
    """Let queries that may see no key see every key, so no softmax row is all -inf (NaN).

    Returns the widened mask and `sees` (True where a query had a visible key), whose False rows
    the caller zeroes in the output. Shape: allowed `(B, 1, T, S)` (broadcastable) ->
    (same, `(B, 1, T, 1)`).
    """
    sees = allowed.any(dim=-1, keepdim=True)
    return allowed | ~sees, sees
