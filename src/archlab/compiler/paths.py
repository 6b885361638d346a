"""The performance paths a compiled model takes, and why: what ``summary().paths`` reports.

Every path is decided once, where the model is built (the weights' dtype by ``compile_spec``, the
attention kernel by ``nn.attention.choose_kernel``, the projections by ``nn.projections``, the
pruning gathers by ``nn.pruning``); this module only reads the built model back, so the summary
cannot disagree with what runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from archlab.compiler.freeze import FreezeReport
from archlab.compiler.nn.attention import _FLASH_DTYPES, Attention
from archlab.compiler.nn.linear_attention import LinearAttention
from archlab.compiler.nn.pruning import TokenStage


@dataclass(frozen=True)
class PerfPath:
    """One performance decision: ``name``, what was chosen, why, and how many modules take it."""

    name: str
    choice: str
    reason: str
    count: int = 1

    def to_dict(self) -> dict[str, str | int]:
        return {
            "name": self.name,
            "choice": self.choice,
            "reason": self.reason,
            "count": self.count,
        }


def performance_paths(model: nn.Module) -> list[PerfPath]:
    """The paths of ``model`` (a ``CompiledModel``), in a fixed order."""
    paths = [_weights(model)]
    attentions = [m for m in model.modules() if isinstance(m, Attention | LinearAttention)]
    fused = [a for a in attentions if not a.is_cross]
    if fused:
        paths.append(
            PerfPath(
                "qkv projection",
                "fused",
                "one D -> (H + 2K) E matrix product per self-attention layer instead of three",
                len(fused),
            )
        )
    plain = [a for a in attentions if isinstance(a, Attention) and a.kernel.name == "sdpa"]
    if plain:
        causal = sum(a.mask.kind == "causal" for a in plain)
        paths.append(
            PerfPath(
                "masks",
                "none materialised",
                f"SDPA with is_causal ({causal}) or no mask ({len(plain) - causal}): flash / "
                "efficient kernels; only a padding mask at run time builds a dense one",
                len(plain),
            )
        )
    grouped = [a for a in attentions if isinstance(a, Attention) and a.groups > 1]
    if grouped:
        dtype = _dtype(model)
        native = dtype in _FLASH_DTYPES
        paths.append(
            PerfPath(
                "grouped-query attention",
                "SDPA enable_gqa" if native else "K/V heads repeated",
                "flash kernel shares K/V heads natively in half precision without a mask"
                if native
                else f"SDPA's native GQA is unfused in {str(dtype).removeprefix('torch.')}: "
                "repeating K/V heads is faster",
                len(grouped),
            )
        )
    stages = [m for m in model.modules() if isinstance(m, TokenStage)]
    if stages:
        paths.append(
            PerfPath(
                "token pruning",
                "static keep counts",
                "k is fixed by the spec, so top-k and gathers run on the device with no host "
                "synchronisation and torch.compile sees one graph",
                len(stages),
            )
        )
    frozen = getattr(model, "frozen", None)
    if frozen is not None:
        paths.extend(_frozen(frozen))
    return paths


def _frozen(report: FreezeReport) -> list[PerfPath]:
    """What ``freeze()`` did: packed linears, fused activations, and why any were left."""
    out = []
    if report.packed:
        out.append(
            PerfPath(
                "frozen linears",
                "oneDNN packed",
                "weights laid out once for oneDNN, bias added inside the product "
                "(CompiledModel.freeze)",
                report.packed,
            )
        )
    if report.fused:
        out.append(
            PerfPath(
                "frozen activations",
                "fused into the linear",
                "GELU / ReLU / SiLU applied by oneDNN on the product's output tile",
                report.fused,
            )
        )
    for reason, count in report.unpacked.items():
        out.append(PerfPath("frozen linears", "F.linear (fallback)", reason, count))
    if report.dtype_after != report.dtype_before:
        out.append(
            PerfPath(
                "frozen weights",
                report.dtype_after,
                f"{report.dtype_before} weights cast for inference on {report.device}",
            )
        )
    if report.compiled is not None:
        out.append(PerfPath("frozen forward", "torch.compile", f"mode {report.compiled}"))
    elif not report.packed and not report.unpacked:
        out.append(PerfPath("frozen forward", "eager", "no linear layer to pack"))
    return out


def _dtype(model: nn.Module) -> torch.dtype:
    first = next(iter(model.parameters()), None)
    return first.dtype if first is not None else torch.float32


def _weights(model: nn.Module) -> PerfPath:
    dtype = _dtype(model)
    name = str(dtype).removeprefix("torch.")
    if dtype in (torch.bfloat16, torch.float16):
        return PerfPath(
            "weights",
            name,
            "half-precision weights: matrix products run in it directly, no autocast casts",
        )
    return PerfPath(
        "weights",
        name,
        "full precision; compile_spec(dtype='bfloat16') (arch compile --dtype bf16) halves "
        "weight memory and uses tensor cores on a GPU",
    )


__all__ = ["PerfPath", "performance_paths"]
