"""Stochastic depth and layer scale."""

from __future__ import annotations

import pytest
import torch

from archlab.compiler.nn import DropPath, LayerScale


def test_drop_path_drops_whole_samples_in_training_only() -> None:
    drop = DropPath(0.25)
    x = torch.randn(4000, 3, 5) + 2.0
    y = drop(x)
    kept = (y != 0).flatten(1).all(dim=1)
    dropped = (y == 0).flatten(1).all(dim=1)
    assert torch.equal(kept | dropped, torch.ones(4000, dtype=torch.bool))  # whole samples
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    assert 0.22 < dropped.float().mean() < 0.28
    assert drop.eval()(x) is x
    assert DropPath(0.0)(x) is x


def test_drop_path_rate_must_be_a_probability() -> None:
    with pytest.raises(ValueError, match=r"drop_path rate must be in \[0, 1\) \(got 1.0\)"):
        DropPath(1.0)


def test_layer_scale_multiplies_each_channel() -> None:
    scale = LayerScale(4, 1e-5)
    assert torch.equal(scale.gamma.detach(), torch.full((4,), 1e-5))
    with torch.no_grad():
        scale.gamma.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(scale(x), x * torch.tensor([1.0, 2.0, 3.0, 4.0]))
