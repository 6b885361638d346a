"""Checking an import against its source: the same folder loaded with ``transformers``, both run
on generated inputs (a padded batch for token models), the largest output difference measured.

The source model is the class the config's ``architectures`` names (the family's default when it
names none); inputs are mapped by name (``ids`` -> ``input_ids`` and ``attention_mask``, ``image``
-> ``pixel_values``, ...), and padded positions are left out of the comparison (their outputs are
meaningless on both sides).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archlab.errors import InteropError

if TYPE_CHECKING:
    from torch import Tensor

    from archlab.compiler import CompiledModel

#: archlab input name -> (the Hugging Face keyword of the tensor, that of its padding mask).
HF_INPUTS: dict[str, tuple[str, str | None]] = {
    "ids": ("input_ids", "attention_mask"),
    "src": ("input_ids", "attention_mask"),
    "tgt": ("decoder_input_ids", "decoder_attention_mask"),
    "token_types": ("token_type_ids", None),
    "image": ("pixel_values", None),
}
#: The inputs whose padding mask also masks the output (the output is per position of it).
OUTPUT_POSITIONS = ("tgt", "ids")


@dataclass(frozen=True)
class Difference:
    """The largest absolute difference between the two outputs over the compared positions
    (``max_abs``), the largest absolute source output (``scale``), their ratio (``relative``)
    and the source class that was run (``reference``)."""

    max_abs: float
    scale: float
    relative: float
    reference: str


def transformers_available() -> bool:
    """Whether ``transformers`` imports here (the check needs it)."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def generated_inputs(
    model: CompiledModel, batch: int = 2, length: int = 12, seed: int = 0
) -> dict[str, Tensor]:
    """Inputs of the model's declared shapes; token inputs get a ``<name>_mask`` that pads the
    tail of every row after the first (True = real token), so padding is exercised."""
    import torch

    inputs = model.example_inputs(batch=batch, length=length, seed=seed)
    for name in list(inputs):
        tensor = inputs[name]
        if tensor.dtype != torch.long or tensor.ndim != 2:
            continue
        T = tensor.shape[1]
        mask = torch.ones(tensor.shape, dtype=torch.bool, device=tensor.device)
        for row in range(1, batch):
            mask[row, max(1, T - 2 * row) :] = False
        inputs[f"{name}_mask"] = mask
    return inputs


def _reference(folder: Path, config: dict[str, Any]) -> Any:
    import transformers

    from archlab.interop.convert import family_of
    from archlab.interop.families import ConversionError, architecture_of

    try:  # the architecture the import converted (the family's default when none is named)
        name = architecture_of(config, family_of(config))
    except ConversionError as exc:
        raise InteropError(str(exc)) from None
    cls: Any = getattr(transformers, name, None)
    if cls is None:
        raise InteropError(f"transformers {transformers.__version__} has no class {name!r}")
    major = int(transformers.__version__.split(".")[0])
    dtype: dict[str, Any] = {"dtype" if major >= 5 else "torch_dtype": "float32"}  # renamed in 5
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()  # its config warnings and progress bars are not archlab's
    logging.disable_progress_bar()
    try:
        return cls.from_pretrained(str(folder), **dtype).eval()
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def _hf_inputs(inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for name, tensor in inputs.items():
        if name.endswith("_mask"):
            continue
        keyword, mask_keyword = HF_INPUTS.get(name, (name, None))
        out[keyword] = tensor
        if mask_keyword and f"{name}_mask" in inputs:
            out[mask_keyword] = inputs[f"{name}_mask"].long()
    return out


def _main_output(result: Any) -> Tensor:
    """The source's main output: logits for models with a head, else the last hidden state."""
    for key in ("logits", "last_hidden_state"):
        value = getattr(result, key, None)
        if value is not None:
            return value
    return result[0] if isinstance(result, tuple | list) else result


def compare(model: CompiledModel, folder: Path, config: dict[str, Any]) -> Difference:
    """Run ``model`` and the ``transformers`` model of ``folder`` on the same generated inputs
    (float32 on the CPU for the source) and measure how far the outputs are apart."""
    import torch

    reference = _reference(folder, config)
    inputs = generated_inputs(model)  # on the model's device
    with torch.inference_mode():
        ours = model(**inputs)
        theirs = _main_output(reference(**_hf_inputs({k: v.cpu() for k, v in inputs.items()})))
    if isinstance(ours, dict):
        raise InteropError("the imported model has several outputs; the check compares one")
    ours = ours.float().cpu()
    theirs = theirs.float()
    if ours.shape != theirs.shape:
        raise InteropError(
            f"the imported output has shape {list(ours.shape)}, {type(reference).__name__}'s "
            f"{list(theirs.shape)}"
        )
    keep = torch.ones(ours.shape[:2] if ours.ndim >= 3 else ours.shape[:1], dtype=torch.bool)
    for name in OUTPUT_POSITIONS:
        mask = inputs.get(f"{name}_mask")
        if mask is not None and ours.ndim >= 3 and tuple(mask.shape) == tuple(ours.shape[:2]):
            keep = mask.cpu()
            break
    gap = (ours - theirs).abs()[keep]
    scale = float(theirs[keep].abs().max()) if keep.any() else 0.0
    max_abs = float(gap.max()) if gap.numel() else 0.0
    return Difference(
        max_abs, scale, max_abs / scale if scale else max_abs, type(reference).__name__
    )


__all__ = [
    "HF_INPUTS",
    "Difference",
    "compare",
    "generated_inputs",
    "transformers_available",
]
