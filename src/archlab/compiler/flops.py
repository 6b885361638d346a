"""FLOPs measured by running a model under ``torch.utils.flop_counter.FlopCounterMode``.

This is the check on ``cost.py``'s graph-only estimate. Counting runs on the ``meta`` device: no
memory is touched and no arithmetic done, so a GPT-2 at 1,024 tokens counts in a fraction of a
second. FlopCounterMode has no formula for the CPU flash-attention kernel of SDPA, so one is
registered here (on ``meta`` SDPA decomposes into counted matrix products anyway).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from archlab.compiler.model import CompiledModel, compile_spec
from archlab.specs.load import SpecSource


def _sdpa_cpu_flops(
    q_shape: Any, k_shape: Any, v_shape: Any, *args: Any, out_shape: Any = None, **kw: Any
) -> int:
    """4 * B * H * T * S * E: the scores and the weighted values (GQA broadcasts K/V heads)."""
    B, H, T, E = q_shape
    S, Ev = k_shape[-2], v_shape[-1]
    return 2 * B * H * T * S * E + 2 * B * H * T * S * Ev


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode that also counts SDPA's CPU kernel."""
    mapping: dict[Any, Any] = {}
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:
        mapping[cpu_sdpa] = _sdpa_cpu_flops  # FlopCounterMode passes it shapes, not tensors
    return FlopCounterMode(display=False, custom_mapping=mapping)


def measure_flops(model: CompiledModel, batch: int = 1, length: int | None = None) -> int:
    """FLOPs of one forward pass per sample, counted on the model's device."""
    model.eval()
    inputs = model.example_inputs(batch=batch, length=length)
    with torch.no_grad(), flop_counter() as counter:
        model(**inputs)
    return int(counter.get_total_flops()) // batch


def measure_spec_flops(spec: SpecSource, length: int | None = None) -> int:
    """FLOPs of a spec's forward pass at its inputs' ``max_len``, counted on ``meta``."""
    return measure_flops(compile_spec(spec, device="meta"), length=length)
