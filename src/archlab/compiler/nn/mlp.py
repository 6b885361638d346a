"""The position-wise feed-forward network, with plain and gated (GLU) activations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from archlab.compiler.nn.linear import Linear

Activation = Literal["gelu", "gelu_tanh", "relu", "silu", "swiglu", "geglu", "geglu_tanh"]


class Gated(nn.Module):
    """A GLU variant (Shazeer 2020): value * act(gate), from one `(..., 2F)` input."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        """Shape: x `(..., 2F)` -> `(..., F)`; the first half is the value, the second the gate."""
        value, gate = x.chunk(2, dim=-1)
        return value * self.act(gate)


class Pointwise(nn.Module):
    """An element-wise activation, applied in place when no gradient is recorded.

    Under `torch.no_grad` / `torch.inference_mode` nothing keeps the input for a backward pass,
    so the activation overwrites `fc1`'s fresh output instead of allocating another hidden-size
    tensor: on a CPU that is most of the activation's cost.
    """

    def __init__(self, kind: Literal["gelu", "gelu_tanh", "relu", "silu"]) -> None:
        super().__init__()
        self.kind = kind
        self.approximate = "tanh" if kind == "gelu_tanh" else "none"

    def forward(self, x: Tensor) -> Tensor:
        """Shape: any -> the same."""
        inplace = not torch.is_grad_enabled()
        if self.kind == "relu":
            return F.relu(x, inplace=inplace)
        if self.kind == "silu":
            return F.silu(x, inplace=inplace)
        if inplace:
            return torch.ops.aten.gelu_(x, approximate=self.approximate)
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return self.kind


_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": lambda: Pointwise("gelu"),
    "gelu_tanh": lambda: Pointwise("gelu_tanh"),
    "relu": lambda: Pointwise("relu"),
    "silu": lambda: Pointwise("silu"),
    "swiglu": lambda: Gated(Pointwise("silu")),
    "geglu": lambda: Gated(Pointwise("gelu")),
    "geglu_tanh": lambda: Gated(Pointwise("gelu_tanh")),
}


def make_activation(name: Activation) -> nn.Module:
    """The activation module for `name`; the GLU variants return a `Gated` module."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


class Mlp(nn.Module):
    """fc1 -> activation -> dropout -> fc2.

    `fc1` maps D to `hidden`, or to 2 * hidden for the GLU variants (`swiglu`, `geglu`,
    `geglu_tanh`; value half first, gate half second); `fc2` maps `hidden` back to D. `dropout` acts on the hidden activations; the
    block applies its own dropout to the branch output.
    """

    def __init__(
        self, dim: int, hidden: int, activation: Activation, bias: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.act = make_activation(activation)
        width = 2 * hidden if isinstance(self.act, Gated) else hidden
        self.fc1 = Linear(dim, width, bias=bias)
        self.drop = nn.Dropout(dropout) if dropout > 0.0 else nn.Identity()
        self.fc2 = Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: x `(B, T, D)` -> `(B, T, D)` (any leading dimensions)."""
        return self.fc2(self.drop(self.act(self.fc1(x))))
