"""Linear attention: the chunked causal form equals the quadratic formula; padding is ignored."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from nn_testing import dependency
from torch import Tensor

from archlab.compiler.nn import LinearAttention
from archlab.compiler.nn.linear_attention import causal_linear_attention, linear_attention

D, H = 32, 4


def quadratic(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
    """phi(Q) phi(K)^T V normalised row by row, with the (T, S) matrix written out."""
    scores = q @ k.transpose(-2, -1)  # (B, H, T, S)
    if causal:
        scores = scores.tril()
    return (scores @ v) / (scores.sum(dim=-1, keepdim=True) + 1e-6)


def features(*shape: int) -> Tensor:
    return F.elu(torch.randn(*shape, dtype=torch.float64)) + 1.0


@pytest.mark.parametrize("length", [1, 63, 64, 150])
def test_chunked_causal_equals_the_quadratic_formula(length: int) -> None:
    q, k, v = features(2, 3, length, 8), features(2, 3, length, 8), torch.randn(2, 3, length, 5)
    v = v.double()
    torch.testing.assert_close(causal_linear_attention(q, k, v), quadratic(q, k, v, causal=True))


def test_bidirectional_equals_the_quadratic_formula() -> None:
    q, k, v = features(2, 3, 10, 8), features(2, 3, 13, 8), torch.randn(2, 3, 13, 8).double()
    torch.testing.assert_close(linear_attention(q, k, v), quadratic(q, k, v, causal=False))


@pytest.mark.parametrize("feature_map", ["elu", "relu"])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_module_applies_the_feature_map_to_its_projections(feature_map: str, kv_heads: int) -> None:
    attention = LinearAttention(D, H, kv_heads=kv_heads, feature_map=feature_map).double()  # type: ignore[arg-type]
    x = torch.randn(2, 9, D, dtype=torch.float64)
    q, k, v = attention.qkv(x).split([D, kv_heads * 8, kv_heads * 8], dim=-1)
    q, k, v = (t.unflatten(-1, (-1, 8)).transpose(1, 2) for t in (q, k, v))
    k, v = k.repeat_interleave(H // kv_heads, dim=1), v.repeat_interleave(H // kv_heads, dim=1)
    phi = (lambda t: F.elu(t) + 1) if feature_map == "elu" else F.relu
    y = quadratic(phi(q), phi(k), v, causal=False).transpose(1, 2).flatten(2)
    torch.testing.assert_close(attention(x), attention.out(y))


@pytest.mark.parametrize("causal", [False, True])
@torch.no_grad()
def test_padded_keys_contribute_nothing(causal: bool) -> None:
    attention = LinearAttention(D, H, causal=causal, bias=False).double()
    x = torch.randn(2, 10, D, dtype=torch.float64)
    padding = torch.ones(2, 10, dtype=torch.bool)
    padding[0, 7:] = False  # trailing padding
    padding[1, :3] = False  # left padding
    y = attention(x, padding)
    noisy = x.clone()
    noisy[~padding] = torch.randn(int((~padding).sum()), D, dtype=torch.float64)
    torch.testing.assert_close(attention(noisy, padding)[padding], y[padding])
    torch.testing.assert_close(y[:1, :7], attention(x[:1, :7]))
    if causal:  # queries 0..2 of sample 1 see only padding: zeros
        assert torch.equal(y[1, :3], torch.zeros(3, D, dtype=torch.float64))


@torch.no_grad()
def test_causal_never_sees_the_future() -> None:
    attention = LinearAttention(D, H, causal=True).double()
    x = torch.randn(1, 70, D, dtype=torch.float64)  # two chunks
    seen = dependency(lambda t: attention(t), x)
    assert torch.equal(seen, torch.ones(70, 70, dtype=torch.bool).tril())


@torch.no_grad()
def test_cross_attention_to_a_padded_memory() -> None:
    attention = LinearAttention(D, H, kv_dim=24).double()
    x, memory = torch.randn(2, 5, D).double(), torch.randn(2, 6, 24).double()
    padding = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    y = attention(x, padding, memory)
    torch.testing.assert_close(y[1:], attention(x[1:], None, memory[1:, :4]))


def test_half_precision_is_computed_in_float32() -> None:
    attention = LinearAttention(D, H, causal=True)
    x = torch.randn(2, 70, D)
    expected = attention(x)
    y = attention.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), expected, atol=0.05, rtol=0.05)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="unknown feature_map 'softplus'"):
        LinearAttention(D, H, feature_map="softplus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="causal linear attention needs self-attention"):
        LinearAttention(D, H, kv_dim=16, causal=True)
    with pytest.raises(ValueError, match="linear attention takes no position bias"):
        LinearAttention(D, H)(torch.zeros(1, 2, D), bias=torch.zeros(H, 2, 2))
