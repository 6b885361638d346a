"""The position-wise feed-forward network, with plain and gated (GLU) activations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import Tensor, nn

Activation = Literal["gelu", "gelu_tanh", "relu", "silu", "swiglu", "geglu"]


class Gated(nn.Module):
    """A GLU variant (Shazeer 2020): value * act(gate), from one `(..., 2F)` input."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        """Shape: x `(..., 2F)` -> `(..., F)`; the first half is the value, the second the gate."""
        value, gate = x.chunk(2, dim=-1)
        return value * self.act(gate)


_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swiglu": lambda: Gated(nn.SiLU()),
    "geglu": lambda: Gated(nn.GELU()),
}


def make_activation(name: Activation) -> nn.Module:
    """The activation module for `name`; the GLU variants return a `Gated` module."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


class Mlp(nn.Module):
    """fc1 -> activation -> dropout -> fc2.

    `fc1` maps D to `hidden`, or to 2 * hidden for `swiglu` and `geglu` (value half first, gate
    half second); `fc2` maps `hidden` back to D. `dropout` acts on the hidden activations; the
    block applies its own dropout to the branch output.
    """

    def __init__(
        self, dim: int, hidden: int, activation: Activation, bias: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.act = make_activation(activation)
        width = 2 * hidden if isinstance(self.act, Gated) else hidden
        self.fc1 = nn.Linear(dim, width, bias=bias)
        self.drop = nn.Dropout(dropout) if dropout > 0.0 else nn.Identity()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: x `(B, T, D)` -> `(B, T, D)` (any leading dimensions)."""
        return self.fc2(self.drop(self.act(self.fc1(x))))
