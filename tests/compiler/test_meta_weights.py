"""``compile_spec(meta_weights=True)``, the build an import loads a checkpoint into: parameters on
``meta`` in the requested dtype (nothing allocated), and everything else as a plain compile makes
it: buffers computed on the device, ties kept, the attention kernels chosen for the device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import archlab

SPECS = Path(__file__).parents[2] / "specs"
#: One spec per kind of computed buffer and of tie: rotary caches and a tied head (gpt-tiny),
#: ALiBi slopes, sinusoidal tables with shared embeddings, a 2-D sine-cosine table, linear
#: attention, and the pruning predictors' own modules.
CASES = [
    "gpt-tiny",
    "alibi-decoder",
    "transformer-tiny",
    "simple-vit-s16",
    "linear-attention-decoder",
    "dynamicvit-tiny-digits",
]


def _ties(model: nn.Module) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(name)
    return sorted(names for names in groups.values() if len(names) > 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", CASES)
def test_meta_weights_keep_all_but_the_values(name: str, dtype: torch.dtype) -> None:
    path = SPECS / f"{name}.json"
    empty = archlab.compile_spec(path, dtype=dtype, meta_weights=True)
    plain = archlab.compile_spec(path, dtype=dtype)
    assert all(p.is_meta and p.dtype == dtype for p in empty.parameters())
    shapes = {n: (p.shape, p.requires_grad) for n, p in empty.named_parameters()}
    assert shapes == {n: (p.shape, p.requires_grad) for n, p in plain.named_parameters()}
    buffers, expected = dict(empty.named_buffers()), dict(plain.named_buffers())
    assert buffers.keys() == expected.keys()
    for key, buffer in buffers.items():
        assert buffer.device == expected[key].device and buffer.dtype == expected[key].dtype
        assert torch.equal(buffer, expected[key]), key
    assert _ties(empty) == _ties(plain)
    assert empty.summary().kernels == plain.summary().kernels
