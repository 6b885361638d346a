"""The MLP's activations against their formulas, and the norm factory."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from archlab.compiler.nn import Mlp, make_norm


def gelu(x: Tensor) -> Tensor:
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def gelu_tanh(x: Tensor) -> Tensor:
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


PLAIN = {
    "gelu": gelu,
    "gelu_tanh": gelu_tanh,
    "relu": lambda x: x.clamp(min=0),
    "silu": lambda x: x / (1 + torch.exp(-x)),
}
GATED = {"swiglu": PLAIN["silu"], "geglu": gelu, "geglu_tanh": gelu_tanh}


@pytest.mark.parametrize("activation", [*PLAIN, *GATED])
def test_activations_match_their_formulas(activation: str) -> None:
    mlp = Mlp(8, 12, activation, bias=True).double()  # type: ignore[arg-type]
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    hidden = x @ mlp.fc1.weight.T + mlp.fc1.bias
    if activation in GATED:
        assert mlp.fc1.out_features == 24
        value, gate = hidden[..., :12], hidden[..., 12:]
        hidden = value * GATED[activation](gate)
    else:
        assert mlp.fc1.out_features == 12
        hidden = PLAIN[activation](hidden)
    torch.testing.assert_close(mlp(x), hidden @ mlp.fc2.weight.T + mlp.fc2.bias)


def test_mlp_without_bias_and_unknown_activation() -> None:
    assert set(Mlp(8, 12, "relu", bias=False).state_dict()) == {"fc1.weight", "fc2.weight"}
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        Mlp(8, 12, "tanh")  # type: ignore[arg-type]


def test_make_norm() -> None:
    layer = make_norm("layernorm", 8, 1e-5)
    assert isinstance(layer, nn.LayerNorm) and layer.eps == 1e-5
    rms = make_norm("rmsnorm", 8, 1e-6)
    assert isinstance(rms, nn.RMSNorm) and rms.eps == 1e-6
    x = torch.randn(3, 8)
    torch.testing.assert_close(rms(x), x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
    with pytest.raises(ValueError, match="unknown norm kind 'batchnorm'"):
        make_norm("batchnorm", 8, 1e-5)  # type: ignore[arg-type]


@pytest.mark.parametrize("activation", [*PLAIN, *GATED])
def test_inference_in_place_equals_training_path(activation: str) -> None:
    """Without autograd the activation runs in place; the result must not change."""
    torch.manual_seed(0)
    mlp = Mlp(8, 16, activation).double()  # type: ignore[arg-type]
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    with_grad = mlp(x)
    with torch.inference_mode():
        in_place = mlp(x)
    torch.testing.assert_close(in_place, with_grad.detach())
    with_grad.sum().backward()  # the graph built with grad on is intact
