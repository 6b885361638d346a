"""Token, patch and CLS embeddings."""

from __future__ import annotations

import math

import torch

from archlab.compiler.nn import ClsToken, PatchEmbedding, TokenEmbedding


def test_token_embedding_looks_up_and_optionally_scales() -> None:
    embedding = TokenEmbedding(50, 16)
    ids = torch.tensor([[1, 4, 4], [0, 49, 2]])
    assert embedding.weight.shape == (50, 16)
    torch.testing.assert_close(embedding(ids), embedding.weight[ids])
    scaled = TokenEmbedding(50, 16, scale=True)
    scaled.load_state_dict(embedding.state_dict())
    torch.testing.assert_close(scaled(ids), embedding.weight[ids] * math.sqrt(16))


def test_patch_embedding_is_row_major() -> None:
    patches = PatchEmbedding(3, 8, 2, 4).double()
    image = torch.randn(2, 3, 6, 8, dtype=torch.float64)
    y = patches(image)
    assert y.shape == (2, 3 * 2, 8)
    weight, bias = patches.proj.weight.flatten(1), patches.proj.bias  # (D, C*ph*pw)
    for row in range(3):
        for col in range(2):
            patch = image[:, :, 2 * row : 2 * row + 2, 4 * col : 4 * col + 4].flatten(1)
            torch.testing.assert_close(y[:, row * 2 + col], patch @ weight.T + bias)


def test_cls_token_prepends_tokens_and_extends_the_mask() -> None:
    cls = ClsToken(2, 8)
    assert cls.tokens.shape == (1, 2, 8)
    x = torch.randn(3, 5, 8)
    mask = torch.rand(3, 5) > 0.3
    y, extended = cls(x, mask)
    torch.testing.assert_close(y[:, :2], cls.tokens.expand(3, -1, -1))
    torch.testing.assert_close(y[:, 2:], x)
    assert extended is not None
    assert extended[:, :2].all() and torch.equal(extended[:, 2:], mask)
    assert cls(x)[1] is None
