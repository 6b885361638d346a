"""Additive position encodings against their formulas."""

from __future__ import annotations

import math

import pytest
import torch

from archlab.compiler.nn import (
    LearnedPosition,
    SinCos2dPosition,
    SinusoidalPosition,
    sincos_2d_table,
    sinusoidal_table,
)


@pytest.mark.parametrize("dim", [8, 7])
def test_sinusoidal_table_is_vaswanis_formula(dim: int) -> None:
    table = sinusoidal_table(20, dim)
    expected = [
        [
            math.sin(p / 10000 ** (c / dim))
            if c % 2 == 0
            else math.cos(p / 10000 ** ((c - 1) / dim))
            for c in range(dim)
        ]
        for p in range(20)
    ]
    torch.testing.assert_close(table, torch.tensor(expected, dtype=torch.float32))


def test_sinusoidal_position_adds_the_first_rows() -> None:
    position = SinusoidalPosition(16, 6).double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(position(x), x + sinusoidal_table(16, 6)[:5].double())
    assert not position.state_dict()  # the table is not saved
    with pytest.raises(ValueError, match="sequence length 17 exceeds the position table's 16"):
        position(torch.zeros(1, 17, 6))


def test_learned_position() -> None:
    position = LearnedPosition(16, 6)
    assert position.weight.shape == (16, 6)
    assert position.weight.abs().max() <= 0.04 and 0.01 < position.weight.std() < 0.03
    x = torch.randn(2, 5, 6)
    torch.testing.assert_close(position(x), x + position.weight[:5])


def test_sincos_2d_is_maes_layout_with_zero_cls_rows() -> None:
    grid_h, grid_w, dim = 3, 4, 8
    table = sincos_2d_table(grid_h, grid_w, dim)
    quarter = dim // 4

    def half(p: int) -> list[float]:
        angles = [p / 10000 ** (k / quarter) for k in range(quarter)]
        return [math.sin(a) for a in angles] + [math.cos(a) for a in angles]

    expected = [half(c) + half(r) for r in range(grid_h) for c in range(grid_w)]  # row-major
    torch.testing.assert_close(table, torch.tensor(expected, dtype=torch.float32))

    position = SinCos2dPosition(grid_h, grid_w, dim, n_cls=2)
    x = torch.randn(2, 2 + grid_h * grid_w, dim)
    y = position(x)
    torch.testing.assert_close(y[:, :2], x[:, :2])
    torch.testing.assert_close(y[:, 2:], x[:, 2:] + table)
    with pytest.raises(ValueError, match=r"dim divisible by 4 \(got 6\)"):
        SinCos2dPosition(2, 2, 6)
