"""torch.compile without graph breaks, and torch.export, on every kernel."""

from __future__ import annotations

import pytest
import torch
from nn_testing import CPU_KERNELS, kernel
from torch import Tensor, nn

from archlab.compiler.nn import (
    AlibiPosition,
    Attention,
    Block,
    LinearAttention,
    MaskPattern,
    Mlp,
    RotaryEmbedding,
    RotaryPosition,
)

D, H = 32, 4
WINDOW = MaskPattern("sliding_window", window=4, causal=True)


def block(kernel_name: str) -> Block:
    mask, position = WINDOW, AlibiPosition(H)
    if kernel_name == "sdpa":
        mask, position = MaskPattern("causal"), RotaryPosition(RotaryEmbedding(D // H, 32))
    attention = Attention(
        D,
        H,
        kv_heads=2,
        mask=mask,
        position=position,
        max_len=32,
        kernel=kernel(kernel_name),
    )
    return Block(
        attention, Mlp(D, 64, "swiglu"), nn.LayerNorm(D), nn.LayerNorm(D), layer_scale=0.1, dim=D
    )


def inputs() -> tuple[Tensor, Tensor]:
    x = torch.randn(2, 12, D)
    padding = torch.ones(2, 12, dtype=torch.bool)
    padding[0, :3] = False
    return x, padding


def check_compiled(module: nn.Module, backend: str) -> None:
    module.eval()
    compiled = torch.compile(module, fullgraph=True, backend=backend)
    x, padding = inputs()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, padding), module(x, padding))
        torch.testing.assert_close(compiled(x), module(x))


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()


@pytest.mark.parametrize("kernel_name", CPU_KERNELS)
def test_block_traces_without_graph_breaks(kernel_name: str) -> None:
    check_compiled(block(kernel_name), backend="aot_eager")


def test_linear_attention_traces_without_graph_breaks() -> None:
    check_compiled(LinearAttention(D, H, causal=True), backend="aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("kernel_name", ["sdpa", "sdpa_mask"])
def test_inductor_compiled_block_matches_eager(kernel_name: str) -> None:
    check_compiled(block(kernel_name), backend="inductor")


@pytest.mark.parametrize("kernel_name", CPU_KERNELS)
@torch.no_grad()
def test_block_exports(kernel_name: str) -> None:
    module = block(kernel_name).eval()
    x, padding = inputs()
    program = torch.export.export(module, (x,), {"key_padding": padding})
    torch.testing.assert_close(program.module()(x, key_padding=padding), module(x, padding))
