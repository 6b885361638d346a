"""``arch train --init``: start a training from weights, matched by name and shape.

The source is a weights file archlab wrote (``arch compile -o``, ``arch import``, a training's
checkpoint) or a registry run, whose best checkpoint is used (``weights_file``, which
``arch export`` shares). Every tensor the file holds must
be one the spec's model has, with the same shape. The model's tensors the file lacks, or holds
in another shape, start fresh, but only where that is the point of fine-tuning: the output
heads (``classify``, ``lm_head``: another number of classes, another vocabulary) and token
pruning stages (DynamicViT's keep predictors). Anything else is an error naming the tensors, so
a file of another architecture is never half-loaded.

``init_plan`` checks before any run is recorded; ``apply_init`` loads when a fold starts.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from archlab.compiler.model import CompiledModel, compile_spec, unshared_state
from archlab.compiler.nn.pruning import TokenStage
from archlab.errors import UserInputError
from archlab.specs.models import Spec

if TYPE_CHECKING:
    from archlab.registry import Registry, Run

#: The ops whose tensors may start fresh: the heads a fine-tuning replaces.
HEAD_OPS = ("classify", "lm_head")


class InitError(UserInputError):
    """``--init`` (or ``arch export``'s MODEL) names no readable weights, or ``--init`` names
    weights that do not fit the spec."""


@dataclass(frozen=True)
class InitPlan:
    """What ``--init`` does to a model: the tensors it loads and those that start fresh."""

    source: str
    sha256: str
    loaded: tuple[str, ...]
    fresh: tuple[str, ...]


def weights_file(source: str, registry: Registry | None, *, what: str = "--init") -> Path:
    """The weights file ``source`` names: a file, or a registry run's checkpoint (the one its
    best epoch wrote, checked against the hash the registry recorded). ``arch train --init`` and
    ``arch export`` take either; ``what`` names the argument in the messages."""
    path = Path(source)
    if path.is_file():
        return path
    if registry is not None:
        from archlab.registry import RegistryError

        try:
            run = registry.get(source)
        except RegistryError:
            run = None
        if run is not None:
            checkpoints = [a for a in run.artifacts if a.kind == "checkpoint"]
            if not checkpoints:
                raise InitError(
                    f"{what} {source}: run {run.id} ({run.kind}, {run.status}) has no checkpoint; "
                    "pick a training run that finished at least one epoch (arch runs list)"
                )
            return registry.artifact_file(run, checkpoints[-1].path)
    raise InitError(
        f"{what} {source}: no such file{' or run in this registry' if registry else ''}; give "
        "a .safetensors file written by arch compile -o, arch import or a training, or a run id"
    )


def run_checkpoint(source: str, registry_url: str | None, *, what: str) -> tuple[Path, Run]:
    """Run ``source``'s checkpoint and the run, from the registry at ``registry_url`` (never
    created here); InitError when there is no registry, no such run or no checkpoint."""
    from archlab.registry import Registry, RegistryError

    try:
        registry = Registry(registry_url, create=False)
    except RegistryError as exc:
        raise InitError(
            f"{source}: no such file, and no registry to look a run up in ({exc})"
        ) from None
    with registry:
        return weights_file(source, registry, what=what), registry.get(source)


def read_weights(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], str]:
    """The tensors of a safetensors file (on the CPU) and the file's sha256."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        weights = load_file(os.fspath(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise InitError(
            f"--init {path} is not a readable safetensors file ({error}); archlab starts from "
            ".safetensors weights only (a pickle is never loaded)"
        ) from None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return weights, digest.hexdigest()


def init_plan(
    model: CompiledModel, weights: Mapping[str, Tensor], source: str, sha256: str
) -> InitPlan:
    """Check ``weights`` against ``model`` (built on any device, ``meta`` included)."""
    ours = {name: tuple(t.shape) for name, t in unshared_state(model).items()}
    theirs = {name: tuple(t.shape) for name, t in weights.items()}
    foreign = sorted(set(theirs) - set(ours))
    fresh = sorted(name for name in ours if theirs.get(name) != ours[name])
    replaceable = _replaceable_prefixes(model)
    stuck = [name for name in fresh if not name.startswith(replaceable)]
    if foreign or stuck:
        parts = []
        if foreign:
            parts.append(f"tensors the spec's model lacks: {_some(foreign)}")
        if stuck:
            parts.append(
                "tensors missing or of another shape outside the heads and pruning stages: "
                + _some([f"{n} {ours[n]} vs {theirs.get(n, 'missing')}" for n in stuck])
            )
        raise InitError(
            f"--init {source} does not fit this spec ({'; '.join(parts)}); start from weights of "
            "the same architecture (only classify / lm_head and token pruning stages may differ)"
        )
    loaded = tuple(sorted(name for name in ours if name not in fresh))
    return InitPlan(source, sha256, loaded, tuple(fresh))


def spec_init_plan(spec: Spec, weights: Mapping[str, Tensor], source: str, sha256: str) -> InitPlan:
    """``init_plan`` against the spec's model built on the ``meta`` device: shapes and tied
    weights only, nothing allocated."""
    with torch.device("meta"):
        model = compile_spec(spec, device="meta")
    return init_plan(model, weights, source, sha256)


def apply_init(model: CompiledModel, weights: Mapping[str, Tensor], plan: InitPlan) -> None:
    """Copy the planned tensors into ``model`` (on its device and dtype); the rest stay as built."""
    state = model.state_dict()
    with torch.no_grad():
        for name in plan.loaded:
            state[name].copy_(weights[name])


def _replaceable_prefixes(model: CompiledModel) -> tuple[str, ...]:
    heads = [f"{node_id}." for node_id, info in model.graph.nodes.items() if info.op in HEAD_OPS]
    stages = [f"{name}." for name, m in model.named_modules() if isinstance(m, TokenStage)]
    return (*heads, *stages)


def _some(names: list[str], limit: int = 6) -> str:
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


__all__ = [
    "HEAD_OPS",
    "InitError",
    "InitPlan",
    "apply_init",
    "init_plan",
    "read_weights",
    "run_checkpoint",
    "spec_init_plan",
    "weights_file",
]
