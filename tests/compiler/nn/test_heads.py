"""Pooling, classification and the (tied) language-model head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from archlab.compiler.nn import Classify, LMHead, Pool, TokenEmbedding


@pytest.fixture
def tokens() -> tuple[torch.Tensor, torch.Tensor]:
    """One CLS token, then 5 tokens; sample 0 has trailing, sample 1 left padding, 2 none real."""
    x = torch.randn(3, 6, 4, dtype=torch.float64)
    mask = torch.tensor(
        [
            [True, True, True, True, False, False],
            [True, False, False, True, True, True],
            [True, False, False, False, False, False],
        ]
    )
    return x, mask


def test_mean_and_max_skip_cls_and_padding(tokens: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, mask = tokens
    mean, largest = Pool("mean", n_cls=1)(x, mask), Pool("max", n_cls=1)(x, mask)
    torch.testing.assert_close(mean[0], x[0, 1:4].mean(0))
    torch.testing.assert_close(mean[1], x[1, 3:6].mean(0))
    torch.testing.assert_close(largest[0], x[0, 1:4].amax(0))
    torch.testing.assert_close(largest[1], x[1, 3:6].amax(0))
    assert torch.equal(mean[2], torch.zeros(4, dtype=torch.float64))  # no real patch: zeros
    assert torch.equal(largest[2], torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(Pool("mean", n_cls=1)(x), x[:, 1:].mean(1))


def test_last_and_cls(tokens: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, mask = tokens
    last = Pool("last")(x, mask)
    torch.testing.assert_close(last, torch.stack([x[0, 3], x[1, 5], x[2, 0]]))
    torch.testing.assert_close(Pool("last")(x), x[:, -1])
    torch.testing.assert_close(Pool("cls", n_cls=1)(x, mask), x[:, 0])
    with pytest.raises(ValueError, match="pool mode cls needs a CLS token"):
        Pool("cls")


def test_distill_reads_the_second_cls_token(tokens: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, mask = tokens
    torch.testing.assert_close(Pool("distill", n_cls=2)(x, mask), x[:, 1])
    with pytest.raises(ValueError, match=r"pool mode distill needs two CLS tokens \(n_cls is 1\)"):
        Pool("distill", n_cls=1)


def test_classify_pools_then_projects(tokens: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, mask = tokens
    head = Classify(4, 7, "mean", n_cls=1).double()
    torch.testing.assert_close(head(x, mask), head.fc(head.pool(x, mask)))
    assert head(x, mask).shape == (3, 7)


def test_lm_head_ties_the_embedding_parameter() -> None:
    embedding = TokenEmbedding(50, 16)
    head = LMHead(16, 50, tied=embedding)
    assert head.weight is embedding.weight
    model = nn.ModuleDict({"tok": embedding, "logits": head})
    assert [name for name, _ in model.named_parameters()] == ["tok.weight"]
    x = torch.randn(2, 3, 16)
    torch.testing.assert_close(head(x), x @ embedding.weight.T)
    with torch.no_grad():
        embedding.weight[0] += 1.0
    assert head.weight.data_ptr() == embedding.weight.data_ptr()
    with pytest.raises(ValueError, match=r"lm_head \(40 x 16\) cannot tie an embedding of shape"):
        LMHead(16, 40, tied=embedding)


def test_lm_head_scale_multiplies_its_input() -> None:
    head = LMHead(16, 50, scale=0.25)
    x = torch.randn(2, 3, 16)
    torch.testing.assert_close(head(x), (0.25 * x) @ head.weight.T)


def test_untied_lm_head_has_no_bias() -> None:
    head = LMHead(16, 50)
    assert [name for name, _ in head.named_parameters()] == ["weight"]
    assert head(torch.randn(2, 3, 16)).shape == (2, 3, 50)
