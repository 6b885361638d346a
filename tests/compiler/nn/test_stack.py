"""Stack: layers in order, one shared T5 bias table, masks and memory passed along."""

from __future__ import annotations

import pytest
import torch
from nn_testing import kernel
from torch import nn

from archlab.compiler.nn import (
    Attention,
    Block,
    Mlp,
    RelativeBiasPosition,
    RelativePositionBias,
    Stack,
)

D, H = 16, 2


def layer(relative_bias: bool) -> Block:
    position = RelativeBiasPosition() if relative_bias else None
    attention = Attention(D, H, position=position, max_len=16, kernel=kernel("sdpa_mask"))
    return Block(attention, Mlp(D, 32, "relu"), nn.LayerNorm(D), nn.LayerNorm(D), dim=D)


@torch.no_grad()
def test_stack_shares_one_relative_bias_table() -> None:
    flags = [True, False, True]
    table = RelativePositionBias(H)
    stack = Stack([layer(flag) for flag in flags], table, flags).double().eval()
    x = torch.randn(2, 7, D, dtype=torch.float64)
    padding = torch.ones(2, 7, dtype=torch.bool)
    padding[1, 5:] = False
    expected, bias = x, table(7, 7)
    for flag, block in zip(flags, stack.layers, strict=True):
        expected = block(expected, padding, None, None, bias if flag else None)
    torch.testing.assert_close(stack(x, padding), expected)
    assert sum(name.startswith("relative_bias") for name, _ in stack.named_parameters()) == 1


def test_stack_without_bias_passes_mask_and_memory() -> None:
    stack = Stack([layer(False), layer(False)]).eval()
    x = torch.randn(2, 7, D)
    padding = torch.ones(2, 7, dtype=torch.bool)
    padding[0, 4:] = False
    y = stack(x, padding)
    torch.testing.assert_close(y[0, :4], stack(x[:1, :4])[0])
    # an unpruned stack's token path carries no state and equals the plain one
    out, mask, state, extra = stack.forward_tokens(x, padding)
    torch.testing.assert_close(out, y)
    assert mask is padding and state is None and extra is None


def test_stack_checks_bias_flags() -> None:
    with pytest.raises(ValueError, match="relative_bias_layers has 1 flags for 2 layers"):
        Stack([layer(True), layer(True)], RelativePositionBias(H), [True])
    with pytest.raises(ValueError, match="flags layers but the stack has no relative_bias"):
        Stack([layer(True)], None, [True])
