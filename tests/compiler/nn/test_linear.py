"""Weight-first products (``compiler.nn.linear``): the same values as ``F.linear`` for the few
rows of a decoding step, and the usual product otherwise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from archlab.compiler.nn.linear import FEW_ROWS, Linear, linear


@pytest.mark.parametrize("shape", [(1, 1, 48), (8, 1, 48), (2, 3, 48), (FEW_ROWS + 1, 48)])
@pytest.mark.parametrize("bias", [True, False])
def test_weight_first_equals_the_usual_product(shape: tuple[int, ...], bias: bool) -> None:
    torch.manual_seed(0)
    x, weight = torch.randn(*shape), torch.randn(70, 48)
    b = torch.randn(70) if bias else None
    out = linear(x, weight, b, weight_first=True)
    assert out.shape == (*shape[:-1], 70) and out.is_contiguous()
    torch.testing.assert_close(out, F.linear(x, weight, b), rtol=1e-5, atol=1e-5)


def test_a_linear_is_an_nn_linear_with_the_same_state() -> None:
    layer = Linear(4, 3)
    assert isinstance(layer, torch.nn.Linear) and set(layer.state_dict()) == {"weight", "bias"}
    x = torch.randn(2, 4)
    plain = layer(x)
    layer.weight_first = True
    torch.testing.assert_close(layer(x), plain)
    del layer.weight_first  # the class default again
    assert layer.weight_first is False
