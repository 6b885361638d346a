"""``import_pretrained``: a checkpoint (folder or hub id) -> its family's spec -> a compiled archlab
model holding the checkpoint's weights."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from archlab.errors import InteropError
from archlab.interop.families import ConversionError, Family, architecture_of
from archlab.interop.families.catalog import FAMILIES
from archlab.interop.sources import (
    HUB_PREFIX,
    PICKLE_SUFFIXES,
    read_config,
    read_weight_file,
    read_weights,
    resolve,
)
from archlab.interop.timm_source import (
    TimmCheckpoint,
    check_timm_name,
    convert_timm,
    is_timm_config,
    read_timm,
)
from archlab.textsafe import printable

if TYPE_CHECKING:
    from torch import Tensor

    from archlab.compiler import CompiledModel


def family_of(config: dict[str, Any]) -> Family:
    """The family that reads ``config["model_type"]``."""
    model_type = config.get("model_type")
    family = FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        supported = ", ".join(sorted(FAMILIES))
        raise InteropError(
            f"model_type {printable(str(model_type))!r} is not supported; archlab imports "
            f"model types: {supported}"
        )
    return family


def convert(
    config: dict[str, Any], state: dict[str, Tensor]
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The spec document and archlab's state dict for a checkpoint's config and tensors. The
    tensors may be views of the checkpoint's (GPT-2's transposed projections): ``load_into``
    makes each one contiguous, after casting it."""
    family = family_of(config)
    try:
        architecture = architecture_of(config, family)
        document = family.spec(config, architecture)
        tensors = family.weights(state, config, architecture)
    except ConversionError as exc:
        raise InteropError(str(exc)) from None
    return document, tensors


def load_into(model: CompiledModel, tensors: dict[str, Tensor], device: torch.device) -> None:
    """Make ``tensors`` the weights of ``model`` (built with ``meta_weights``: its parameters give
    only shapes and dtypes), each one contiguous on ``device`` in its parameter's dtype, taken as
    it is where it already is so; missing, unexpected and mis-shaped tensors
    are reported by name. Tied weights stay one Parameter."""
    from archlab.compiler.model import tensor_mismatches, tensor_table, tied_aliases

    state = model.state_dict(keep_vars=True)
    copies: dict[tuple[int, torch.dtype], Tensor] = {}  # a tensor under two names: one copy
    placed = {}
    for name, t in tensors.items():
        dtype = state[name].dtype if name in state else t.dtype
        key = (id(t), dtype)
        if key not in copies:
            copies[key] = _placed(t, device, dtype)
        placed[name] = copies[key]
    aliases = tied_aliases(model)
    problems = tensor_mismatches(tensor_table(state), tensor_table(placed), aliases)
    if problems:
        raise InteropError(f"the converted weights do not fit the generated spec: {problems}")
    for alias, root in aliases.items():  # tied: one tensor, under both names
        placed[alias] = placed[root] = placed[root] if root in placed else placed[alias]
    model.load_state_dict(placed, strict=True, assign=True)
    for alias, root in aliases.items():  # assign gave each name its own Parameter: share again
        owner, _, leaf = alias.rpartition(".")
        setattr(model.get_submodule(owner), leaf, model.get_parameter(root))
    empty = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if empty:  # strict loading makes this unreachable; a meta tensor would fail much later
        raise InteropError(f"no weights were loaded for {', '.join(empty[:5])}")


def _placed(tensor: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``tensor`` contiguous on ``device``, floating point in ``dtype``: itself when it already
    is (a tensor read from a safetensors file stays mapped from it, copy-on-write). Otherwise
    it is moved and cast as it lies in memory, then rearranged: a cast along memory order is
    fast where a casting copy of a transposed view is not (GPT-2's projections into bfloat16 on
    a CPU), and the rearranging copy then moves the narrower dtype, on the target device."""
    if not tensor.is_floating_point():
        dtype = tensor.dtype
    return tensor.to(device=device, dtype=dtype).contiguous()


@dataclass(frozen=True)
class Imported:
    """An imported checkpoint: the model, the local folder it was read from and its config, and
    for a timm checkpoint its resolved settings and their sources."""

    model: CompiledModel
    folder: Path
    config: dict[str, Any]
    timm: TimmCheckpoint | None = None


def _read_source(
    source: str | os.PathLike[str], timm_model: str | None
) -> tuple[Path, dict[str, Any], TimmCheckpoint | None, dict[str, Tensor]]:
    """The folder and config of ``source``, then either its resolved timm checkpoint (a timm hub
    folder, or a bare state-dict file with ``timm_model``) or the Hugging Face tensors."""
    text = os.fspath(source)
    path = Path(text)
    weight_file = path.suffix in (".safetensors", *PICKLE_SUFFIXES)
    if not text.startswith(HUB_PREFIX) and path.is_file() and (weight_file or timm_model):
        if timm_model is None:
            raise InteropError(
                f"{printable(text)} is a bare state-dict file: pass the timm model it belongs "
                "to with --timm-model NAME (timm_model= in Python), e.g. vit_small_patch16_224; "
                "a Hugging Face checkpoint is read from its folder (config.json plus weights)"
            )
        timm = read_timm(timm_model, read_weight_file(path))
        return path.parent, {}, timm, {}
    folder = resolve(source)
    config = read_config(folder)
    if is_timm_config(config) or timm_model is not None:
        if "model_type" in config:
            raise InteropError(
                f"--timm-model is for timm checkpoints; {printable(text)} is a Hugging Face "
                f"{printable(str(config['model_type']))} folder"
            )
        if timm_model is not None and is_timm_config(config):
            check_timm_name(timm_model, config["architecture"])
        name = timm_model or str(config.get("architecture"))
        return folder, config, read_timm(name, read_weights(folder), config), {}
    family_of(config)  # an unsupported model type is refused before the weights are read
    return folder, config, None, read_weights(folder)


def import_checkpoint(
    source: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    timm_model: str | None = None,
) -> Imported:
    """``import_pretrained``, keeping where the checkpoint was read from (for ``verify``)."""
    from archlab.compiler.devices import resolve_device
    from archlab.compiler.model import compile_spec
    from archlab.specs import load_spec

    folder, config, timm, state = _read_source(source, timm_model)
    if timm is not None:
        document, tensors = convert_timm(timm)
    else:
        document, tensors = convert(config, state)
    text = os.fspath(source)
    if text.startswith(HUB_PREFIX):
        name = text.removeprefix(HUB_PREFIX)
    elif timm is not None and not config:  # a bare file: its model's name
        name = timm.name
    else:
        name = folder.name
    document["name"] = "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "model"
    dev = resolve_device(device) if device is not None else torch.device("cpu")
    spec = load_spec(document)
    model = compile_spec(spec, device=dev, dtype=dtype or "float32", meta_weights=True)
    load_into(model, tensors, dev)
    return Imported(model.eval(), folder, config, timm)


def import_pretrained(
    source: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    timm_model: str | None = None,
) -> CompiledModel:
    """A pretrained checkpoint as an archlab model whose outputs equal the source's.

    ``source``: a Hugging Face model folder (``config.json`` plus ``model.safetensors``, sharded
    safetensors or ``pytorch_model.bin``) or ``hf:org/name`` (through ``huggingface_hub``'s
    cache; ``pip install 'archlab[hub]'``); a timm hub folder or ``hf:timm/<name>`` (recognised
    by its config's ``architecture``); or a timm state-dict file (``.safetensors``, or
    ``.pth``/``.bin`` read weights-only) with ``timm_model``, timm's model name
    (``vit_small_patch16_224``, ``deit_small_distilled_patch16_224``, ...). The model's
    ``.spec`` is the generated spec; it is in eval mode, on ``device`` (cpu) in ``dtype``
    (float32). Problems raise ``InteropError`` (a ``UserInputError``).
    """
    return import_checkpoint(source, device=device, dtype=dtype, timm_model=timm_model).model


__all__ = [
    "Imported",
    "convert",
    "family_of",
    "import_checkpoint",
    "import_pretrained",
    "load_into",
]
