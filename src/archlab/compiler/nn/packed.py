"""An inference-only linear layer: the weight packed once for oneDNN, bias and activation fused.

``CompiledModel.freeze()`` replaces a model's linears with these on the CPU. MKL's ``addmm``
re-lays the weight out for its kernel on every call; oneDNN's packed (``reorder``-ed) weight is
laid out once, and the bias and an element-wise activation are applied while the output tile is
still in cache instead of in extra passes over ``(B, T, N)``. On the 2-core AMD EPYC (Zen 4) of
``bench/RESULTS.md`` a BERT-base ``fc1`` + GELU over 1024 rows (768 -> 3072) took 22.7 ms packed
against 33.7 ms for ``addmm`` then ``gelu``; the packed products run at the cores' float32 FMA
peak (211-228 GFLOP/s), MKL's at 143-201.

The operators are PyTorch's own (``torch.ops.mkldnn._reorder_linear_weight`` and
``_linear_pointwise``, those inductor's CPU ``freezing`` emits), present in CPU builds with
oneDNN; ``onednn_problem`` says why they cannot be used elsewhere, so that freezing falls back to
plain ``F.linear``. They have no backward: a packed layer runs under ``torch.no_grad`` only.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: element-wise activations oneDNN applies inside the product: name -> (attr, algorithm)
FUSABLE: dict[str, tuple[str, str]] = {
    "relu": ("relu", ""),
    "gelu": ("gelu", "none"),
    "gelu_tanh": ("gelu", "tanh"),
    "silu": ("swish", ""),
}
Fused = Literal["none", "relu", "gelu", "gelu_tanh", "silu"]


@functools.cache
def onednn_problem(dtype: torch.dtype = torch.float32) -> str | None:
    """Why packed oneDNN linears cannot run here in `dtype`, or None when they can.

    Checked once per process and dtype: float32, or bfloat16 on a CPU with native bfloat16
    instructions (AVX512-BF16 / AMX); a CPU build with oneDNN; the operators present; and a
    small packed product with a fused GELU equal to ``F.gelu(F.linear(...))`` (to float32
    rounding, or bfloat16's). ``torch.backends.mkldnn.flags(enabled=False)`` around ``freeze()``
    turns packing off (checked on every call, not cached)."""
    name = str(dtype).removeprefix("torch.")
    if dtype not in (torch.float32, torch.bfloat16):
        return f"{name} weights: packing is used for float32 and bfloat16 only"
    if not torch.backends.mkldnn.is_available():
        return "this PyTorch build has no oneDNN (MKLDNN)"
    ops = torch.ops.mkldnn
    if not (hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")):
        return "this PyTorch has no mkldnn._linear_pointwise / _reorder_linear_weight operator"
    if dtype == torch.bfloat16 and not _native_bfloat16(ops):
        return "bfloat16 weights: this CPU has no native bfloat16 instructions for oneDNN"
    try:
        gen = torch.Generator().manual_seed(0)
        weight = torch.randn(24, 16, generator=gen)
        bias, x = torch.randn(24, generator=gen), torch.randn(3, 5, 16, generator=gen)
        weight, bias, x = weight.to(dtype), bias.to(dtype), x.to(dtype)
        packed = ops._reorder_linear_weight(weight, None)
        got = ops._linear_pointwise(x, packed, bias, "gelu", [], "none").float()
        want = F.gelu(F.linear(x.float(), weight.float(), bias.float()))
    except (RuntimeError, TypeError, NotImplementedError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"the oneDNN linear operator failed on this CPU: {first[:160]}"
    close = 1e-4 if dtype == torch.float32 else 3e-2
    if got.shape != want.shape or not torch.allclose(got, want, rtol=close, atol=close):
        return "the oneDNN linear operator disagreed with F.linear on a probe product"
    return None


def _native_bfloat16(ops: Any) -> bool:
    check = getattr(ops, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def packing_problem(dtype: torch.dtype) -> str | None:
    """`onednn_problem`, and whether ``torch.backends.mkldnn`` is switched off right now."""
    if not torch.backends.mkldnn.enabled:
        return "oneDNN is switched off (torch.backends.mkldnn.enabled is False)"
    return onednn_problem(dtype)


class PackedLinear(nn.Module):
    """``act(x W^T + b)`` with ``W`` packed for oneDNN and ``act`` (``fused``) applied inside.

    Its state dict is the plain linear's (``weight`` unpacked back to `(N, K)`, ``bias``), so a
    frozen model saves the same file as before freezing. It has no parameters and no backward.
    """

    packed: Tensor
    bias: Tensor | None

    def __init__(self, linear: nn.Linear, fused: Fused = "none") -> None:
        super().__init__()
        if fused != "none" and fused not in FUSABLE:
            raise ValueError(f"oneDNN cannot fuse {fused!r}; it fuses {', '.join(FUSABLE)}")
        weight = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.fused: Fused = fused
        self.attr, self.algorithm = FUSABLE.get(fused, ("none", ""))
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None)
        self.register_buffer("packed", packed, persistent=False)
        bias = None if linear.bias is None else linear.bias.detach().contiguous()
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        """Shape: x `(..., K)` -> `(..., N)`."""
        return torch.ops.mkldnn._linear_pointwise(
            x, self.packed, self.bias, self.attr, [], self.algorithm
        )

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        destination[prefix + "weight"] = self.packed.to_dense()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias

    def extra_repr(self) -> str:
        fused = "" if self.fused == "none" else f", fused={self.fused}"
        return f"in_features={self.in_features}, out_features={self.out_features}{fused}"


__all__ = ["FUSABLE", "Fused", "PackedLinear", "onednn_problem", "packing_problem"]
