"""timm checkpoints as import sources: a timm hub folder (``config.json`` naming its
``architecture``, no ``model_type``) or a bare state-dict file plus the timm model name, converted
through :mod:`archlab.interop.families.timm_vit`, and checked against ``timm`` itself when that
package imports.

timm's config carries no depth or width: they come from the model name and the tensors' shapes,
and :attr:`TimmCheckpoint.sources` says which setting came from where (``arch import`` prints it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from archlab.errors import InteropError
from archlab.interop.families import ConversionError, timm_vit
from archlab.textsafe import printable

if TYPE_CHECKING:
    from torch import Tensor

    from archlab.compiler import CompiledModel
    from archlab.interop.verify import Difference

#: How each origin in ``sources`` is spoken of.
ORIGINS = {
    "name": "the model name",
    "model_args": "config.json's model_args",
    "shapes": "the tensor shapes",
}


@dataclass(frozen=True)
class TimmCheckpoint:
    """A timm checkpoint read and resolved: its model name, the ``model_args`` its config gave,
    the resolved settings (see :func:`~archlab.interop.families.timm_vit.resolve`), where each
    came from, and timm's tensors (kept for the check against timm)."""

    name: str
    model_args: dict[str, Any]
    config: dict[str, Any]
    sources: dict[str, str]
    state: dict[str, Tensor]

    @property
    def architecture(self) -> str:
        """timm's class: ``VisionTransformer`` or ``VisionTransformerDistilled``."""
        return timm_vit.architecture_for(self.config)

    def describe(self) -> list[str]:
        """One line per origin: which settings (with their values) came from it."""
        lines = []
        for origin, words in ORIGINS.items():
            keys = [k for k, v in self.sources.items() if v == origin]
            if keys:
                settings = ", ".join(f"{k}={self.config[k]}" for k in keys)
                lines.append(f"from {words}: {settings}")
        return lines


def is_timm_config(config: dict[str, Any]) -> bool:
    """Whether ``config`` is a timm hub folder's: no ``model_type``, an ``architecture`` name."""
    return "model_type" not in config and isinstance(config.get("architecture"), str)


def check_timm_name(timm_model: str, architecture: str) -> None:
    """``--timm-model`` given with a timm hub folder must name the model the folder's
    ``config.json`` names (the same family, size, patch and image size; the pretrained tag may
    differ). The shapes cannot catch every other name: a ViT and a DeiT of one size, or a name
    whose settings ``model_args`` replace, hold tensors of the same shapes. A name timm_vit does
    not read at all is left for :func:`read_timm` to refuse."""
    ours = timm_vit.name_parts(timm_model)
    theirs = timm_vit.name_parts(architecture)
    if ours is None or ours == theirs:
        return
    differ = (
        " ("
        + ", ".join(f"{k} {ours[k]} vs {theirs[k]}" for k in ours if ours[k] != theirs[k])
        + ")"
        if theirs is not None
        else ""
    )
    raise InteropError(
        f"--timm-model {printable(timm_model)} (timm_model= in Python) is not the model the "
        f"folder's config.json names, architecture {printable(architecture)}{differ}; drop "
        "--timm-model to import the folder as its config says, or fix the name"
    )


def read_timm(
    name: str, state: dict[str, Tensor], config: dict[str, Any] | None = None
) -> TimmCheckpoint:
    """Resolve timm model ``name`` against ``state`` (and a hub folder's ``config``: its
    ``model_args`` and ``num_classes``, which must agree with the head's shape)."""
    model_args = dict((config or {}).get("model_args") or {})
    try:
        resolved = timm_vit.resolve(name, state, model_args)
    except ConversionError as exc:
        raise InteropError(str(exc)) from None
    pool = (config or {}).get("global_pool", model_args.get("global_pool", "token"))
    if pool not in ("token", None):
        raise InteropError(
            f"timm model {printable(name)!r} pools with {printable(str(pool))!r}; archlab "
            "imports timm ViTs that classify from the class token (global_pool 'token')"
        )
    classes = (config or {}).get("num_classes")
    if isinstance(classes, int) and classes != resolved["num_classes"]:
        raise InteropError(
            f"config.json says num_classes {classes}, but the weights' head has "
            f"{resolved['num_classes']} classes"
        )
    sources = resolved.pop("sources")
    return TimmCheckpoint(name, model_args, resolved, sources, state)


def convert_timm(checkpoint: TimmCheckpoint) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The spec document and archlab's state dict of a resolved timm checkpoint."""
    architecture = checkpoint.architecture
    try:
        document = timm_vit.spec(checkpoint.config, architecture)
        tensors = timm_vit.weights(checkpoint.state, checkpoint.config, architecture)
    except ConversionError as exc:
        raise InteropError(str(exc)) from None
    return document, tensors


def timm_available() -> bool:
    """Whether ``timm`` imports here (the check against timm needs it)."""
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


def compare_timm(model: CompiledModel, checkpoint: TimmCheckpoint) -> Difference:
    """Run ``model`` and ``timm.create_model(name, pretrained=False, num_classes=...)`` holding
    the checkpoint's tensors on the same generated images; measure how far the outputs are
    apart."""
    import timm
    import torch

    from archlab.interop.verify import Difference, generated_inputs

    args = {k: v for k, v in checkpoint.model_args.items() if k != "num_classes"}
    reference = timm.create_model(
        checkpoint.name,
        pretrained=False,
        num_classes=int(checkpoint.config["num_classes"]),
        **args,
    )
    try:
        reference.load_state_dict(checkpoint.state, strict=True)
    except RuntimeError as exc:
        raise InteropError(
            f"timm's {printable(checkpoint.name)} does not take these weights: "
            f"{printable(str(exc).strip().splitlines()[0])}"
        ) from None
    reference = reference.float().eval()
    inputs = generated_inputs(model)
    with torch.inference_mode():
        ours = model(**inputs).float().cpu()
        theirs = reference(inputs["image"].float().cpu()).float()
    if ours.shape != theirs.shape:
        raise InteropError(
            f"the imported output has shape {list(ours.shape)}, timm's {list(theirs.shape)}"
        )
    max_abs = float((ours - theirs).abs().max())
    scale = float(theirs.abs().max())
    label = f"{checkpoint.name} ({type(reference).__name__})"
    return Difference(max_abs, scale, max_abs / scale if scale else max_abs, label)


__all__ = [
    "TimmCheckpoint",
    "check_timm_name",
    "compare_timm",
    "convert_timm",
    "is_timm_config",
    "read_timm",
    "timm_available",
]
