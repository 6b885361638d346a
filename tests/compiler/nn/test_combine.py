"""Add, Average and Concat carry padding masks along."""

from __future__ import annotations

import pytest
import torch

from archlab.compiler.nn import Add, Average, Concat


def test_add_sums_and_ands_masks() -> None:
    a, b, c = torch.randn(3, 2, 4, 5).unbind(0)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    y, combined = Add()(a, b, c, masks=[mask, None, None])
    torch.testing.assert_close(y, a + b + c)
    assert combined is not None and torch.equal(combined, mask)
    other = torch.tensor([[False, True, True, True], [True, True, True, True]])
    assert torch.equal(Add()(a, b, masks=[mask, other])[1], mask & other)  # type: ignore[arg-type]
    assert Add()(a, b)[1] is None


def test_average_is_the_mean_and_ands_masks() -> None:
    a, b = torch.randn(2, 3, 5).unbind(0)
    mask = torch.tensor([[True, False, True, True, True]] * 3)
    y, combined = Average()(a, b, masks=[mask, None])
    torch.testing.assert_close(y, (a + b) / 2)
    assert combined is not None and torch.equal(combined, mask)
    assert Average()(a, b)[1] is None


def test_concat_along_sequence_joins_masks() -> None:
    a, b = torch.randn(2, 3, 5), torch.randn(2, 4, 5)
    mask_b = torch.tensor([[True, True, False, False], [True] * 4])
    y, mask = Concat("sequence")(a, b, masks=[None, mask_b])
    torch.testing.assert_close(y, torch.cat([a, b], dim=1))
    assert mask is not None and mask.shape == (2, 7)
    assert mask[:, :3].all() and torch.equal(mask[:, 3:], mask_b)
    assert Concat()(a, b)[1] is None


def test_concat_along_features_ands_masks() -> None:
    a, b = torch.randn(2, 3, 5), torch.randn(2, 3, 2)
    mask_a = torch.tensor([[True, False, True], [True, True, True]])
    y, mask = Concat("feature")(a, b, masks=[mask_a, None])
    torch.testing.assert_close(y, torch.cat([a, b], dim=-1))
    assert mask is not None and torch.equal(mask, mask_a)


def test_combine_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="unknown concat axis 'channel'"):
        Concat("channel")  # type: ignore[arg-type]
    x = torch.randn(1, 2, 3)
    with pytest.raises(ValueError, match="got 1 masks for 2 inputs"):
        Add()(x, x, masks=[torch.ones(1, 2, dtype=torch.bool)])
