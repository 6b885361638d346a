"""The structural dense mask is built once per (pattern, T, S, device) and shared by layers."""

from __future__ import annotations

import torch

import archlab
from archlab.compiler.nn import attention


def test_a_mask_cached_under_inference_mode_still_trains() -> None:
    attention._structural_mask.cache_clear()
    model = archlab.compile_spec("specs/sliding-window-decoder.json", seed=0, device="cpu")
    inputs = model.example_inputs(batch=2, length=48)
    model.eval()
    with torch.inference_mode():
        first = model(**inputs)
    info = attention._structural_mask.cache_info()
    assert info.currsize == 1 and info.hits >= 1  # one mask for every layer with the window
    model.train()
    model(**inputs).float().square().mean().backward()  # the cached mask is no inference tensor
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs), first)
