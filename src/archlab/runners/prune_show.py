"""``arch prune show``: which patches each token pruning stage of a trained run kept.

``show_run(RUN, registry, output=...)`` loads the run's best checkpoint (on the CPU: a few images
need no accelerator), takes the first N images of the run's own validation split (or of other
data), runs ``CompiledModel.trace_tokens`` in eval mode and draws, as the DynamicViT paper does,
one row per image: the image itself, then one panel per pruning stage in which the patches that
stage (or an earlier one) dropped are painted light grey. For ToMe ``merge`` stages nothing is
dropped: the patches that were merged into one token share a colour (tokens still made of one
patch are left as they are). For EViT ``attention_topk`` stages with ``fuse``, the patches folded
into the fused token are shown faded rather than blanked.

With ``record`` (the default), what was drawn is recorded in the registry as an ``eval`` run
linked to the run (tag and config ``evaluates``, ``evaluation: prune-show``; the picture attached
as a ``kept-patches`` artifact), after the picture is written, so a failed drawing records nothing.

The two halves can be used apart: ``kept_panels(model, inputs)`` computes what each stage left of
each image's patch grid (``KeptPanels``, numpy arrays; no drawing), and
``archlab.viz.patches.draw_kept`` draws it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from archlab.errors import UserInputError
from archlab.specs.analysis import SeqShape
from archlab.viz.patches import KeptPanels, StagePanel, draw_kept
from archlab.viz.save import check_output

if TYPE_CHECKING:
    from archlab.compiler.model import CompiledModel
    from archlab.registry import Registry
    from archlab.runners.data import TaskData

DEFAULT_IMAGES = 6


class PruneShowError(UserInputError):
    """A run whose pruning cannot be drawn as asked: no checkpoint, no pruning, no image input."""


def image_input(model: CompiledModel) -> tuple[str, str] | None:
    """The image input the model's patches come from and its ``patch_embed`` node, or None."""
    for node_id, info in model.graph.nodes.items():
        if info.op != "patch_embed":
            continue
        source = info.spec.input
        if source in model.spec.image_inputs():
            return source, node_id
    return None


def display_images(images: torch.Tensor) -> tuple[np.ndarray, bool]:
    """Images ``(B, C, H, W)`` (any scale, e.g. normalised) as ``(B, H, W, 3)`` in [0, 1], each
    rescaled by its own minimum and maximum; and whether they are grey. Images of other than 1 or
    3 channels are shown as the mean over their channels."""
    x = images.detach().float().cpu().numpy()
    grey = x.shape[1] != 3
    if grey:
        x = x.mean(axis=1, keepdims=True).repeat(3, axis=1)
    low = x.min(axis=(1, 2, 3), keepdims=True)
    span = x.max(axis=(1, 2, 3), keepdims=True) - low
    x = np.where(span > 0, (x - low) / np.where(span > 0, span, 1.0), 0.5)
    return x.transpose(0, 2, 3, 1), grey


@torch.no_grad()
def kept_panels(
    model: CompiledModel,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor | None = None,
) -> KeptPanels:
    """Run ``model`` (in eval mode) on ``inputs`` (by input name, one of them the image input the
    patches come from) and collect what each pruning stage left of every image's patch grid.

    With ``labels`` (classification), the model's predictions (argmax of its output) come too.
    """
    found = image_input(model)
    if found is None:
        name = model.spec.name or model.spec_hash[:12]
        raise PruneShowError(
            f"spec {name} has no patch_embed node reading an image input; "
            "there is no patch grid to draw"
        )
    name, embed = found
    shape = model.graph.shape(embed)
    assert isinstance(shape, SeqShape) and shape.grid is not None
    grid = shape.grid
    patch = tuple(model.graph.nodes[embed].spec.patch_size)
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    feed = {
        k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in inputs.items()
    }
    model.eval()
    out, trace = model.trace_tokens(**feed)
    stages: list[StagePanel] = []
    for record in trace.stages:
        assert record.source is not None and record.index is not None
        n = record.n_cls
        slot = record.source[:, n:]  # (B, N)
        if slot.shape[1] != grid[0] * grid[1]:
            raise PruneShowError(
                f"stage {record.name} traces {slot.shape[1]} patch tokens, but {embed} makes a "
                f"{grid[0]}x{grid[1]} grid of {grid[0] * grid[1]}; cannot place them on the image"
            )
        present = trace.kept(record)  # (B, N)
        fused = present & (record.index.gather(1, slot.clamp(min=0)) < 0)  # EViT's fused token
        stages.append(
            StagePanel(
                name=record.name,
                method=record.method,
                visible=(present & ~fused).cpu().numpy(),
                fused=fused.cpu().numpy(),
                slot=slot.cpu().numpy(),
            )
        )
    shown, grey = display_images(inputs[name])
    predictions = None
    if labels is not None and isinstance(out, torch.Tensor) and out.dim() == 2:
        predictions = tuple(int(p) for p in out.argmax(dim=-1).tolist())
    return KeptPanels(
        images=shown,
        grey=grey,
        grid=(int(grid[0]), int(grid[1])),
        patch=(int(patch[0]), int(patch[1])),
        stages=tuple(stages),
        labels=None if labels is None else tuple(int(t) for t in labels.tolist()),
        predictions=predictions,
    )


# ------------------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class ShowReport:
    """What ``show_run`` drew: where, for which run, from which images (``indices``: their rows
    of the data); ``eval_run`` the eval run recording the picture (None when not recorded)."""

    path: Path
    run_id: str
    spec_name: str
    source: str  # the images: "the validation split of run X" or the data source
    panels: KeptPanels
    indices: tuple[int, ...] = ()
    eval_run: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report for ``--json``: the file, the run, the images and each stage's counts."""
        return {
            "output": str(self.path),
            "run": self.run_id,
            "spec": self.spec_name,
            "data": self.source,
            "indices": list(self.indices),
            "stages": [
                {"name": s.name, "method": s.method, "first_image": s.describe(0)}
                for s in self.panels.stages
            ],
            "eval_run": self.eval_run,
        }


def show_run(
    run_id: str,
    registry: Registry,
    *,
    output: str | os.PathLike[str] = "kept.png",
    data_source: str | None = None,
    images: int = DEFAULT_IMAGES,
    record: bool = True,
) -> ShowReport:
    """Draw which patches each pruning stage of run ``run_id``'s best checkpoint keeps, for the
    first ``images`` examples of its validation split (recomputed from its recorded
    configuration, as ``arch eval`` does) or, with ``data_source``, of that data; with
    ``record`` the picture is recorded as an eval run linked to the run (module docstring)."""
    from archlab.compiler import load_compiled
    from archlab.compiler.pruning import pruning_stages
    from archlab.runners.data import load_data
    from archlab.runners.train import _recorded_config, validation_rows

    if images < 1:
        raise PruneShowError(f"--images is how many images to draw: at least 1, not {images}")
    path, _ = check_output(output)
    run = registry.get(run_id)
    checkpoints = [a for a in run.artifacts if a.kind == "checkpoint"]
    if not checkpoints:
        raise PruneShowError(
            f"run {run.id} has no checkpoint artifact to draw from (a {run.kind} run, "
            f"{run.status}); pick a training run that finished at least one epoch "
            "(`arch runs list` shows them)"
        )
    model = load_compiled(registry.artifact_file(run, checkpoints[-1].path), device="cpu")
    spec = model.spec
    name = spec.name or model.spec_hash[:12]
    if not pruning_stages(model.graph):
        raise PruneShowError(
            f"run {run.id}'s spec {name} has no token pruning stages; there is nothing to "
            "draw. Pick a run of a spec with `prune` on an encoder or `token_prune` nodes "
            "(e.g. specs/dynamicvit-tiny-digits.json)"
        )
    if image_input(model) is None:
        inputs = ", ".join(f"{k} ({v.kind})" for k, v in spec.inputs.items())
        raise PruneShowError(
            f"run {run.id}'s spec {name} has no image input (its inputs: {inputs}); "
            "arch prune show draws image patches, so it needs a vision spec whose patch_embed "
            "reads an image input"
        )
    config = _recorded_config(run.config or {})
    data = load_data(data_source or config.data, spec, seed=config.seed)
    if data_source is None:
        rows = validation_rows(run, data, config, "draw images of")
        source = f"the validation split of run {run.id}"
    else:
        rows = np.arange(len(data), dtype=np.int64)
        source = data.source
    picked = torch.tensor(rows[:images], dtype=torch.long)
    if len(picked) == 0:
        raise PruneShowError(f"{source} has no examples to draw; pass --data SOURCE")
    labels = data.targets[picked] if data.task == "classify" else None
    panels = kept_panels(model, {k: v[picked] for k, v in data.inputs.items()}, labels)
    where = "its validation split" if data_source is None else data.source
    title = f"{name} · run {run.id}\nthe patches each pruning stage kept, on {where}"
    draw_kept(panels, path, title)
    indices = tuple(int(i) for i in picked.tolist())
    report = ShowReport(path, run.id, name, source, panels, indices)
    if not record:
        return report
    settings = {"images": images, "split": "val" if data_source is None else "all"}
    eval_id = _record(registry, model, report, data, settings)
    return dataclasses.replace(report, eval_run=eval_id)


def _record(
    registry: Registry,
    model: CompiledModel,
    report: ShowReport,
    data: TaskData,
    settings: dict[str, Any],
) -> str:
    """Record ``report``'s picture as an ``eval`` run linked to its training run, the picture
    attached as a ``kept-patches`` artifact. Returns its id."""
    config = {
        "evaluates": report.run_id,
        "evaluation": "prune-show",
        **settings,
        "rows": list(report.indices),
        "data": data.source,
        "data_sha256": data.content_sha256,
        "examples": len(report.indices),
    }
    tags = {"evaluates": report.run_id, "evaluation": "prune-show"}
    with registry.start_run(model.spec, config, kind="eval", tags=tags) as handle:
        handle.log_artifact(report.path, "kept-patches", copy=True)
    return str(handle.id)


__all__ = [
    "DEFAULT_IMAGES",
    "KeptPanels",
    "PruneShowError",
    "ShowReport",
    "StagePanel",
    "display_images",
    "image_input",
    "kept_panels",
    "show_run",
]
