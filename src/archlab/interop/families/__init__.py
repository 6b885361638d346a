"""One module per checkpoint family: how a source's config becomes a spec and its tensors
become archlab's.

Every family module defines a ``FAMILY`` (:class:`Family`); ``FAMILIES`` maps each Hugging Face
``model_type`` to its family. The converter functions are pure: a config (the parsed
``config.json``) and a state dict in, a spec document and archlab's state dict out. Reading
folders, hub ids and weight files is ``archlab.interop.sources``' job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

Config = Mapping[str, Any]
StateDict = Mapping[str, Tensor]


@dataclass(frozen=True)
class Family:
    """A checkpoint family: the ``model_type`` values it reads and the architectures it knows.

    ``spec(config, architecture)`` -> the spec document (a dict ``archlab.load_spec`` accepts);
    ``weights(state, config, architecture)`` -> archlab's state dict for that spec, every tensor
    of the compiled model present (``CompiledModel.load_state_dict(strict=True)`` takes it);
    ``architectures``: the ``config["architectures"][0]`` values it converts (the first is the
    default when a config names none).
    """

    name: str
    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    spec: Callable[[Config, str], dict[str, Any]]
    weights: Callable[[StateDict, Config, str], dict[str, Tensor]]


class ConversionError(ValueError):
    """A config or checkpoint this family cannot convert exactly (the message says what)."""


def architecture_of(config: Config, family: Family) -> str:
    """The architecture a config names (``architectures[0]``), checked against ``family``."""
    named = config.get("architectures") or [family.architectures[0]]
    architecture = str(named[0])
    if architecture not in family.architectures:
        known = ", ".join(family.architectures)
        raise ConversionError(
            f"{family.name} checkpoints of architecture {architecture!r} are not supported; "
            f"supported: {known}"
        )
    return architecture


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add ``family`` to ``FAMILIES`` under each of its model types."""
    for model_type in family.model_types:
        FAMILIES[model_type] = family
    return family


__all__ = [
    "FAMILIES",
    "Config",
    "ConversionError",
    "Family",
    "StateDict",
    "architecture_of",
    "register",
]
