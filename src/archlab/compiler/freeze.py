"""``CompiledModel.freeze()``: turn a built model into an inference-only one, in place.

What freezing does depends on where the model lives, and every choice is kept in a
``FreezeReport`` that ``summary().paths`` shows:

- **CPU, float32 (or bfloat16 on a CPU with native bfloat16 instructions)**: every linear layer whose weight is its own (not tied to an embedding) becomes
  a ``PackedLinear``: its weight packed once for oneDNN, its bias, and the activation right after
  it (an MLP's ``fc1`` + GELU / ReLU / SiLU, a ``Linear`` followed by an activation in a
  ``Sequential``) fused into the product. Where oneDNN is missing, switched off or fails a probe
  product (another CPU, another PyTorch), the linears stay as they are and the reason is shown.
- **CUDA**: float32 weights become bfloat16 (tensor cores; half the weight memory), and the
  forward is compiled (``torch.compile`` in inductor's default mode, which compiles in seconds;
  ``mode=`` picks ``reduce-overhead`` for CUDA graphs, or ``max-autotune`` to tune kernels at a
  first call of minutes), unless ``compile=False``.
- **compile=True on the CPU**: inductor compiles the forward with its own ``freezing`` (constant
  folding and the same oneDNN packing, done by the compiler), instead of the eager packing.

Layer norms and residual additions are left to their own kernels: no public operator fuses them
with a packed product, and they are a few percent of an encoder's time (``bench/RESULTS.md``).

A frozen model runs under ``torch.no_grad``; ``train()``, ``requires_grad_(True)``, moving or
casting it, and inputs that require a gradient raise ``FrozenModelError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from archlab.compiler.errors import CompileError
from archlab.compiler.nn.linear import Linear
from archlab.compiler.nn.mlp import Mlp, Pointwise
from archlab.compiler.nn.packed import FUSABLE, Fused, PackedLinear, packing_problem

if TYPE_CHECKING:
    from archlab.compiler.model import CompiledModel

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class FrozenModelError(CompileError):
    """Something a frozen (inference-only) model cannot do: train, take gradients, move."""


@dataclass
class FreezeReport:
    """What ``freeze()`` did to a model (read back by ``summary().paths``)."""

    device: str
    #: linear layers packed for oneDNN, and how many of them fuse their activation
    packed: int = 0
    fused: int = 0
    #: linear layers left as they were, and why (one reason per kind of layer)
    unpacked: dict[str, int] = field(default_factory=dict)
    #: the weights' dtype before and after (a cast happens on CUDA only)
    dtype_before: str = "float32"
    dtype_after: str = "float32"
    #: the torch.compile mode and options, or None when the forward runs eagerly
    compiled: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "packed": self.packed,
            "fused": self.fused,
            "unpacked": dict(self.unpacked),
            "dtype_before": self.dtype_before,
            "dtype_after": self.dtype_after,
            "compiled": self.compiled,
        }


def freeze_model(
    model: CompiledModel, *, compile: bool | None = None, mode: str | None = None
) -> FreezeReport:
    """Make ``model`` inference-only in place (see the module's description); its report.

    ``compile``: torch.compile the forward (default: on CUDA yes, on the CPU no, where the eager
    packed form is as fast without a compilation). ``mode``: the torch.compile mode (CUDA default
    inductor's ``default``; ``reduce-overhead`` captures CUDA graphs, ``max-autotune`` tunes its
    kernels at a first call of minutes).
    """
    if model.frozen is not None:
        return model.frozen
    if mode is not None and mode not in COMPILE_MODES:
        raise CompileError(
            f"unknown compile mode {mode!r}; choose one of {', '.join(COMPILE_MODES)}"
        )
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    if device.type == "meta":
        raise FrozenModelError("a model with meta weights cannot be frozen: load its weights first")
    compile = device.type == "cuda" if compile is None else compile
    report = FreezeReport(device.type, dtype_before=_name(dtype), dtype_after=_name(dtype))
    model.eval()
    model.requires_grad_(False)
    if device.type == "cuda" and dtype == torch.float32:
        model.to(torch.bfloat16)
        report.dtype_after = "bfloat16"
    if device.type == "cpu" and not compile:
        _pack_linears(model, dtype, report)
    runner: Callable[..., Any] = type(model).forward.__get__(model)
    if compile:
        runner, report.compiled = _compiled(runner, device, mode)
    model.forward = _guarded(runner)
    model.frozen = report
    return report


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _compiled(
    runner: Callable[..., Any], device: torch.device, mode: str | None
) -> tuple[Callable[..., Any], str]:
    if device.type == "cuda":
        chosen = mode or "default"
        return torch.compile(runner, mode=chosen), chosen
    if mode not in (None, "default"):
        return torch.compile(runner, mode=mode), mode
    return torch.compile(runner, options={"freezing": True}), "default, inductor freezing"


def _guarded(runner: Callable[..., Any]) -> Callable[..., Any]:
    """``runner`` under ``torch.no_grad``, refusing inputs that require a gradient."""

    def forward(*args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            if isinstance(value, Tensor) and value.requires_grad:
                raise FrozenModelError(
                    "this model is frozen for inference (CompiledModel.freeze()): an input "
                    "requires a gradient, and no gradient flows through a frozen model; use a "
                    "model built without freeze()"
                )
        with torch.no_grad():
            return runner(*args, **kwargs)

    return forward


# ------------------------------------------------------------------------------ packing


def _pack_linears(model: nn.Module, dtype: torch.dtype, report: FreezeReport) -> None:
    """Replace each linear with its own weight by a `PackedLinear`, fusing the activation that
    follows it where the model's structure says which one that is."""
    linears = [(o, n, m) for o, n, m in _children(model) if type(m) in _LINEAR_TYPES]
    if not linears:
        return
    problem = packing_problem(dtype)
    if problem is not None:
        report.unpacked[problem] = report.unpacked.get(problem, 0) + len(linears)
        return
    shared = _shared_weights(model)
    for owner, name, linear in linears:
        assert isinstance(linear, nn.Linear)
        if id(linear.weight) in shared:
            reason = "its weight is tied to another layer's: packing would copy it"
            report.unpacked[reason] = report.unpacked.get(reason, 0) + 1
            continue
        fused = _fusable_after(owner, name)
        setattr(owner, name, PackedLinear(linear, fused))
        if fused != "none":
            _drop_activation(owner, name)
            report.fused += 1
        report.packed += 1


_LINEAR_TYPES = (nn.Linear, Linear)  # exactly these: a subclass may compute something else


def _children(model: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """Every (parent, attribute name, child) pair below ``model``, parents first."""
    for owner in list(model.modules()):
        for name, child in list(owner.named_children()):
            yield owner, name, child


def _shared_weights(model: nn.Module) -> set[int]:
    seen: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        seen[id(param)] = seen.get(id(param), 0) + 1
    return {key for key, count in seen.items() if count > 1}


def _fusable_after(owner: nn.Module, name: str) -> Fused:
    """The activation applied to this linear's output and nothing else, if oneDNN can fuse it:
    an MLP's ``fc1`` followed by a plain (not gated) activation, or a ``Sequential``'s linear
    followed by ``nn.GELU`` / ``nn.ReLU`` / ``nn.SiLU``."""
    if isinstance(owner, Mlp) and name == "fc1" and isinstance(owner.act, Pointwise):
        kind = owner.act.kind
        return kind if kind in FUSABLE else "none"
    if isinstance(owner, nn.Sequential):
        position = list(owner._modules).index(name)
        after = list(owner)[position + 1] if position + 1 < len(owner) else None
        return _module_activation(after)
    return "none"


def _module_activation(module: nn.Module | None) -> Fused:
    if isinstance(module, nn.GELU):
        return "gelu_tanh" if module.approximate == "tanh" else "gelu"
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.SiLU):
        return "silu"
    return "none"


def _drop_activation(owner: nn.Module, name: str) -> None:
    """The fused activation's own module becomes an identity (it already ran in the product)."""
    if isinstance(owner, Mlp):
        owner.act = nn.Identity()
        return
    position = list(owner._modules).index(name)
    after = list(owner._modules)[position + 1]
    setattr(owner, after, nn.Identity())


__all__ = ["COMPILE_MODES", "FreezeReport", "FrozenModelError", "freeze_model"]
