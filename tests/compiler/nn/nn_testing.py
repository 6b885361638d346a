"""Helpers for the building-block tests: the kernels available here and plain formulas."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from archlab.compiler.nn import Attention, KernelChoice, MaskPattern

# Every softmax kernel that runs on CPU (flex runs eagerly and forward-only there).
CPU_KERNELS = ("reference", "sdpa", "sdpa_mask", "flex")

MASKS = {
    "none": MaskPattern("none"),
    "causal": MaskPattern("causal"),
    "window_causal": MaskPattern("sliding_window", window=3, causal=True),
    "window_both": MaskPattern("sliding_window", window=2),
    "prefix": MaskPattern("prefix", prefix_len=4),
    "block": MaskPattern("block_local", block=4),
    "block_causal": MaskPattern("block_local", block=4, causal=True),
}


def kernel(name: str) -> KernelChoice:
    return KernelChoice(name, "test")


def runs(kernel_name: str, mask: MaskPattern, position: str | None) -> bool:
    """Whether `kernel_name` can run this attention (sdpa takes no mask tensor and no bias)."""
    return kernel_name != "sdpa" or (mask.is_plain and position in (None, "rotary"))


def rule(mask: MaskPattern) -> Callable[[int, int], bool]:
    """The mask rule as written in the spec, one (query, key) pair at a time."""
    window, prefix, block = mask.window or 0, mask.prefix_len or 0, mask.block or 1
    rules: dict[str, Callable[[int, int], bool]] = {
        "none": lambda i, j: True,
        "causal": lambda i, j: j <= i,
        "sliding_window": (
            (lambda i, j: i - window < j <= i)
            if mask.causal
            else (lambda i, j: abs(i - j) < window)
        ),
        "prefix": lambda i, j: j <= i or j < prefix,
        "block_local": lambda i, j: i // block == j // block and (j <= i or not mask.causal),
    }
    return rules[mask.kind]


def rule_matrix(mask: MaskPattern, T: int, S: int) -> Tensor:
    allows = rule(mask)
    return torch.tensor([[allows(i, j) for j in range(S)] for i in range(T)])


def rotate_complex(x: Tensor, rotated: int, base: float = 10000.0) -> Tensor:
    """RoPE written with complex numbers: channel pair (c, c + R/2) turns by p * base^(-2c/R)."""
    half = rotated // 2
    T = x.shape[-2]
    theta = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / rotated)
    turn = torch.polar(torch.ones(T, half, dtype=torch.float64), torch.arange(T)[:, None] * theta)
    z = torch.complex(x[..., :half], x[..., half:rotated]) * turn
    return torch.cat([z.real, z.imag, x[..., rotated:]], dim=-1)


def alibi_reference(heads: int, T: int, S: int) -> Tensor:
    """-slope * |i - j| with the slopes of Press et al., computed with Python floats."""
    closest = 2 ** math.floor(math.log2(heads))

    def geometric(n: int) -> list[float]:
        return [2 ** (-8 * (k + 1) / n) for k in range(n)]

    slopes = geometric(closest) + geometric(2 * closest)[::2][: heads - closest]
    return torch.tensor(
        [[[-s * abs(i - j) for j in range(S)] for i in range(T)] for s in slopes],
        dtype=torch.float64,
    )


def plain_attention(
    attn: Attention,
    x: Tensor,
    *,
    key_padding: Tensor | None = None,
    memory: Tensor | None = None,
    bias: Tensor | None = None,
    rotated: int = 0,
) -> Tensor:
    """softmax(QK^T / sqrt(E) + bias + mask) V from the module's weights, written out plainly.

    Masked entries get -inf; rows with no visible key give zeros. Unnormalised q/k (no qk_norm).
    """
    H, K, E = attn.heads, attn.kv_heads, attn.head_dim
    B, T, _ = x.shape
    if memory is None:
        q, k, v = attn.qkv(x).split([H * E, K * E, K * E], dim=-1)
    else:
        q, k, v = attn.q(x), *attn.kv(memory).chunk(2, dim=-1)
    S = k.shape[1]
    q = q.reshape(B, T, H, E).permute(0, 2, 1, 3)
    k = k.reshape(B, S, K, E).permute(0, 2, 1, 3).repeat_interleave(H // K, dim=1)
    v = v.reshape(B, S, K, E).permute(0, 2, 1, 3).repeat_interleave(H // K, dim=1)
    if rotated:
        q, k = rotate_complex(q, rotated), rotate_complex(k, rotated)
    scores = torch.einsum("bhte,bhse->bhts", q, k) / math.sqrt(E)
    if bias is not None:
        scores = scores + bias
    allowed = rule_matrix(attn.mask, T, S)[None, None]
    if key_padding is not None:
        allowed = allowed & key_padding[:, None, None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.nan_to_num(scores.softmax(dim=-1), nan=0.0)
    y = torch.einsum("bhts,bhse->bhte", weights, v)
    return attn.out(y.permute(0, 2, 1, 3).reshape(B, T, H * E))


def dependency(f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """`(T, S)` bool: output position i of `f` changes when input position j is perturbed."""
    base = f(x)
    changed = []
    for j in range(x.shape[1]):
        poked = x.clone()
        poked[:, j] += 1.0
        changed.append((f(poked) - base).abs().amax(dim=(0, 2)) > 1e-9)  # (T,)
    return torch.stack(changed, dim=1)
