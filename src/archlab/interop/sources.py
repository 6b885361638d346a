"""Reading a checkpoint: a local Hugging Face folder or an ``hf:org/name`` hub id, as its parsed
``config.json`` and its tensors.

Weights come from ``model.safetensors``, sharded safetensors (``model.safetensors.index.json``)
or ``pytorch_model.bin`` read with ``torch.load(weights_only=True)``: nothing but tensors is ever
unpickled. Every problem is an :class:`~archlab.errors.InteropError` naming the file and the fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from archlab.errors import InteropError
from archlab.textsafe import printable

HUB_PREFIX = "hf:"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read into memory: where it came from, its config and its tensors."""

    source: str
    folder: Path
    config: dict[str, Any]
    state: dict[str, Tensor]


def resolve(source: str | os.PathLike[str]) -> Path:
    """The local folder of ``source``: a path, or ``hf:org/name`` downloaded to (or found in)
    the Hugging Face cache."""
    text = os.fspath(source)
    if text.startswith(HUB_PREFIX):
        return _from_hub(text[len(HUB_PREFIX) :])
    folder = Path(text)
    if not folder.exists():
        raise InteropError(
            f"{printable(text)} does not exist; give a Hugging Face model folder "
            f"(config.json plus weights) or a hub id such as hf:gpt2"
        )
    if not folder.is_dir():
        raise InteropError(
            f"{printable(text)} is a file; give the Hugging Face model folder that holds it "
            "(config.json plus weights)"
        )
    return folder


def _from_hub(repo_id: str) -> Path:
    """A hub id's snapshot folder, downloaded (or brought up to date) in the Hugging Face cache;
    without a network, the snapshot already cached."""
    if not repo_id or repo_id.count("/") > 1:
        raise InteropError(f"hub id {printable(repo_id)!r} is not of the form org/name")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise InteropError(
            "reading hf: ids needs the huggingface_hub package: pip install 'archlab[hub]' "
            "(or download the folder and give its path)"
        ) from None
    patterns = ["config.json", "*.safetensors", SAFETENSORS_INDEX, PICKLE, PICKLE_INDEX]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # network, auth, a missing repo: try the cache, else report this
        failure = exc
    try:  # offline: the snapshot already in the cache
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        raise InteropError(
            f"cannot get hf:{printable(repo_id)} from the Hugging Face hub nor find it in the "
            f"local cache: {type(failure).__name__}: {printable(str(failure))}"
        ) from None


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's ``config.json`` as a dict."""
    path = folder / "config.json"
    if not path.is_file():
        raise InteropError(
            f"{printable(str(folder))} has no config.json; archlab reads Hugging Face model "
            "folders as save_pretrained writes them (config.json plus weights)"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InteropError(f"cannot read {printable(str(path))}: {exc}") from None
    if not isinstance(config, dict):
        raise InteropError(f"{printable(str(path))} is not a JSON object")
    return config


def read_weights(folder: Path) -> dict[str, Tensor]:
    """Every tensor of the folder's checkpoint, by its name in the source library."""
    if (folder / SAFETENSORS).is_file():
        return _read_safetensors(folder / SAFETENSORS)
    if (folder / SAFETENSORS_INDEX).is_file():
        out: dict[str, Tensor] = {}
        for shard in _shards(folder / SAFETENSORS_INDEX):
            out.update(_read_safetensors(shard))
        return out
    if (folder / PICKLE).is_file():
        return _read_pickle(folder / PICKLE)
    if (folder / PICKLE_INDEX).is_file():
        out = {}
        for shard in _shards(folder / PICKLE_INDEX):
            out.update(_read_pickle(shard))
        return out
    raise InteropError(
        f"{printable(str(folder))} has no weights: expected {SAFETENSORS}, {SAFETENSORS_INDEX} "
        f"(sharded) or {PICKLE}"
    )


#: The suffixes of a bare state-dict file (a timm checkpoint given with its model name).
PICKLE_SUFFIXES = (".pth", ".pt", ".bin")


def read_weight_file(path: Path) -> dict[str, Tensor]:
    """Every tensor of one state-dict file: ``.safetensors``, or ``.pth``/``.pt``/``.bin`` read
    with ``torch.load(weights_only=True)``."""
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix in PICKLE_SUFFIXES:
        return _read_pickle(path)
    raise InteropError(
        f"{printable(str(path))} is neither .safetensors nor a PyTorch state dict "
        f"({', '.join(PICKLE_SUFFIXES)})"
    )


def _shards(index: Path) -> list[Path]:
    """The shard files an index names, each checked to exist."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        raise InteropError(
            f"{printable(str(index))} is not a shard index (a JSON object with a weight_map)"
        ) from None
    shards = []
    for name in names:
        shard = index.parent / str(name)
        if os.sep in str(name) or "/" in str(name) or not shard.is_file():
            raise InteropError(
                f"shard {printable(str(name))!r} named in {printable(str(index))} is missing; "
                "download the whole folder again"
            )
        shards.append(shard)
    return shards


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InteropError(
            f"cannot read {printable(str(path))} (truncated or not safetensors?): "
            f"{printable(str(exc))}; download it again"
        ) from None


def _read_pickle(path: Path) -> dict[str, Tensor]:
    """A ``pytorch_model.bin`` through ``torch.load(weights_only=True)``: tensors, dicts and
    plain values only; any other object in the pickle is refused, never constructed."""
    import pickle

    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InteropError(
            f"{printable(str(path))} holds more than tensors, which archlab never unpickles "
            f"({printable(first)}); convert it to safetensors where you trust it"
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise InteropError(
            f"cannot read {printable(str(path))} (truncated or not a PyTorch checkpoint?): "
            f"{printable(str(exc).strip().splitlines()[0] if str(exc).strip() else '')}"
        ) from None
    for wrapper in ("state_dict", "model"):  # training checkpoints (DeiT's hold "model")
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise InteropError(f"{printable(str(path))} is not a state dict (names -> tensors)")
    return state


def read(source: str | os.PathLike[str]) -> Checkpoint:
    """Config and tensors of ``source`` (a folder or ``hf:org/name``)."""
    folder = resolve(source)
    config = read_config(folder)
    return Checkpoint(os.fspath(source), folder, config, read_weights(folder))


__all__ = [
    "HUB_PREFIX",
    "PICKLE_SUFFIXES",
    "Checkpoint",
    "read",
    "read_config",
    "read_weight_file",
    "read_weights",
    "resolve",
]
