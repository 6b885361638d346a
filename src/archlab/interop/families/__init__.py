"""One module per checkpoint family: how a source's config becomes a spec and its tensors
become archlab's.

Every family module defines a ``FAMILY`` (:class:`Family`); ``FAMILIES`` maps each Hugging Face
``model_type`` to its family. The converter functions are pure: a config (the parsed
``config.json``) and a state dict in, a spec document and archlab's state dict out. Reading
folders, hub ids and weight files is ``archlab.interop.sources``' job.

A family may also export: ``export_problems(spec)`` says what in a spec the family cannot
express (nothing: it can), ``export(spec, state)`` gives the Hugging Face config and tensors.
:func:`exporter_for` picks the family a spec fits; writing the folder is
``archlab.interop.export``'s job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from archlab.specs.models import Spec

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

    Exporting families also give ``export_problems(spec)``: what in the spec has no counterpart
    in the family (an empty list when the spec fits), and ``export(spec, state)``: the Hugging
    Face config (with ``model_type`` and ``architectures``) and state dict of a fitting spec's
    model, from archlab's state dict.
    """

    name: str
    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    spec: Callable[[Config, str], dict[str, Any]]
    weights: Callable[[StateDict, Config, str], dict[str, Tensor]]
    export_problems: Callable[[Spec], list[str]] | None = None
    export: Callable[[Spec, StateDict], tuple[dict[str, Any], dict[str, Tensor]]] | None = None


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


def exporting_families() -> list[Family]:
    """The registered families that can export, each once, by name."""
    unique = {family.name: family for family in FAMILIES.values()}
    return [unique[name] for name in sorted(unique) if unique[name].export is not None]


def exporter_for(spec: Spec, family: str | None = None) -> Family:
    """The family ``spec`` can be exported to: ``family`` (a family name or ``model_type``, any
    case) when given, else the first exporting family the spec fits. A spec no family can
    express raises ``ConversionError`` listing, per family, what does not fit."""
    candidates = exporting_families()
    if family is not None:
        wanted = family.lower()
        candidates = [
            f for f in candidates if wanted in (f.name.lower(), *(m.lower() for m in f.model_types))
        ]
        if not candidates:
            known = ", ".join(f.name for f in exporting_families()) or "none"
            raise ConversionError(f"no family {family!r} exports to Hugging Face; known: {known}")
    if not candidates:
        raise ConversionError("no family that exports to Hugging Face is registered")
    reasons: list[str] = []
    for candidate in candidates:
        assert candidate.export_problems is not None
        problems = candidate.export_problems(spec)
        if not problems:
            return candidate
        reasons.append(f"{candidate.name}:\n" + "\n".join(f"  - {p}" for p in problems))
    raise ConversionError(
        f"spec {spec.name!r} cannot be exported to Hugging Face exactly; what does not fit\n"
        + "\n".join(reasons)
    )


__all__ = [
    "FAMILIES",
    "Config",
    "ConversionError",
    "Family",
    "StateDict",
    "architecture_of",
    "exporter_for",
    "exporting_families",
    "register",
]
