"""The patches each token pruning stage kept: ``arch prune show``.

``draw_kept(panels, path, title)`` draws the ``KeptPanels`` (plain numpy data, defined here) that
``archlab.runners.prune_show.kept_panels`` computes (images, patch grid and, per stage, which
patches are still visible, fused or merged), as the DynamicViT paper does: one row per image, the
image itself, then one panel per pruning stage in which the patches that stage (or an earlier one)
dropped are painted light grey; patches merged into one token (ToMe) share a colour, those folded
into EViT's fused token are faded. ``stage_image`` gives one such panel as an array.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from archlab.viz.save import new_figure, output_format, plain_axes, save

DROPPED = np.array([0.88, 0.88, 0.88])  # a dropped patch: light grey, as in DynamicViT's figures
TILE_EDGE = "0.62"  # the outline of each dropped patch, to tell it from light image content
FUSED_FADE = 0.7  # a patch folded into EViT's fused token: this much of DROPPED over the image
MERGE_ALPHA = 0.55  # opacity of a merged group's colour over its patches
PANEL_INCHES = 1.8  # width and height of one panel


# ------------------------------------------------------------------------------ the panel data


@dataclass(frozen=True)
class StagePanel:
    """What one pruning stage left of each image's patches (B images, N patches in row-major grid
    order, the original order).

    ``visible`` bool ``(B, N)``: the patch is still a token of its own or part of a merged one;
    ``fused`` bool ``(B, N)``: it only lives on inside EViT's fused token; ``slot`` int ``(B, N)``:
    the position of the token the patch now belongs to (-1 once dropped), so patches with the same
    slot were merged (ToMe).
    """

    name: str
    method: str
    visible: np.ndarray
    fused: np.ndarray
    slot: np.ndarray

    @property
    def patches(self) -> int:
        return int(self.visible.shape[1])

    def kept(self, row: int) -> int:
        """Patches of image ``row`` still present (not dropped, not only in a fused token)."""
        return int(self.visible[row].sum())

    def tokens(self, row: int) -> int:
        """Patch tokens image ``row`` has after the stage (merged groups and a fused token count
        once each)."""
        slots = self.slot[row]
        return len(np.unique(slots[slots >= 0]))

    def merged_groups(self, row: int) -> list[list[int]]:
        """The patch indices of each token made of two or more patches, in grid order."""
        groups: dict[int, list[int]] = {}
        for i, (slot, visible) in enumerate(zip(self.slot[row], self.visible[row], strict=True)):
            if visible:
                groups.setdefault(int(slot), []).append(i)
        return [group for group in groups.values() if len(group) > 1]

    def describe(self, row: int = 0) -> str:
        """``12/16 patches``, ``16 patches -> 13 tokens`` (merge), ``12/16 patches + fused``."""
        if self.method == "merge":
            return f"{self.patches} patches → {self.tokens(row)} tokens"
        fused = " + fused" if self.fused[row].any() else ""
        return f"{self.kept(row)}/{self.patches} patches{fused}"

    def uniform(self) -> bool:
        """Whether every image shows the same count (static keep counts: always, so far)."""
        return len({self.describe(r) for r in range(self.visible.shape[0])}) == 1


@dataclass(frozen=True)
class KeptPanels:
    """Everything ``draw_kept`` draws: the images, rescaled to [0, 1] for display
    (``(B, H, W, 3)``, grey images repeated over the 3 channels), the patch grid and size, a
    ``StagePanel`` per pruning stage in the order they ran, and for classification the true
    labels and the model's predictions."""

    images: np.ndarray
    grey: bool
    grid: tuple[int, int]
    patch: tuple[int, int]
    stages: tuple[StagePanel, ...]
    labels: tuple[int, ...] | None = None
    predictions: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


def stage_image(panels: KeptPanels, stage: StagePanel, row: int) -> np.ndarray:
    """Image ``row`` as ``stage`` left it, ``(H, W, 3)`` in [0, 1]: dropped patches light grey,
    fused ones faded towards it, each merged group tinted with a colour of its own."""
    (gh, gw), (ph, pw) = panels.grid, panels.patch
    out = panels.images[row].copy()

    def per_pixel(mask: np.ndarray) -> np.ndarray:  # (N,) -> (H, W)
        return np.kron(mask.reshape(gh, gw), np.ones((ph, pw))).astype(bool)

    fused = per_pixel(stage.fused[row])
    out[fused] = FUSED_FADE * DROPPED + (1 - FUSED_FADE) * out[fused]
    out[per_pixel(~stage.visible[row] & ~stage.fused[row])] = DROPPED
    if stage.method == "merge":
        palette = _palette()
        for i, group in enumerate(stage.merged_groups(row)):
            mask = np.zeros(stage.patches, dtype=bool)
            mask[group] = True
            where = per_pixel(mask)
            colour = palette[i % len(palette)]
            out[where] = MERGE_ALPHA * colour + (1 - MERGE_ALPHA) * out[where]
    return out


def _palette() -> np.ndarray:
    from matplotlib import colormaps

    return np.asarray(colormaps["tab10"](np.arange(10)))[:, :3]


def draw_kept(panels: KeptPanels, path: str | os.PathLike[str], title: str) -> None:
    """Draw ``panels`` to ``path`` (.png, .svg or .pdf), atomically: rows are images, the columns
    the image and then each stage. PlotError if the file cannot be written."""
    fmt = output_format(path)
    rows, cols = len(panels), 1 + len(panels.stages)
    fig = new_figure(
        figsize=(PANEL_INCHES * cols, PANEL_INCHES * rows + 0.5), layout="constrained", dpi=100
    )
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        ax = axes[r][0]
        if panels.grey:
            ax.imshow(panels.images[r, :, :, 0], cmap="gray", vmin=0.0, vmax=1.0)
        else:
            ax.imshow(panels.images[r])
        text, colour = _row_title(panels, r)
        ax.set_title(text, fontsize="small", color=colour)
        for c, stage in enumerate(panels.stages, start=1):
            ax = axes[r][c]
            ax.imshow(stage_image(panels, stage, r), vmin=0.0, vmax=1.0)
            _outline_dropped(ax, panels, stage, r)
            if r == 0:
                ax.set_title(f"{stage.name}\n{stage.describe(0)}", fontsize="small")
            elif not stage.uniform():
                ax.set_title(stage.describe(r), fontsize="x-small")
    plain_axes(axes)
    fig.suptitle(title, fontsize="medium")
    save(fig, path, fmt)


def _outline_dropped(ax: Any, panels: KeptPanels, stage: StagePanel, row: int) -> None:
    """A thin outline around each patch ``stage`` dropped (or fused), so the blanked tiles read as
    tiles even next to white strokes."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    (_, gw), (ph, pw) = panels.grid, panels.patch
    gone = np.flatnonzero(~stage.visible[row])
    tiles = [Rectangle(((i % gw) * pw - 0.5, (i // gw) * ph - 0.5), pw, ph) for i in gone]
    if tiles:
        ax.add_collection(
            PatchCollection(tiles, facecolor="none", edgecolor=TILE_EDGE, linewidth=0.5)
        )


def _row_title(panels: KeptPanels, row: int) -> tuple[str, str]:
    """The title over image ``row``, and its colour (red for a wrong prediction)."""
    if panels.labels is None:
        return ("input" if row == 0 else "", "black")
    label = panels.labels[row]
    if panels.predictions is None:
        return (f"label {label}", "black")
    pred = panels.predictions[row]
    return (f"label {label} · pred {pred}", "black" if pred == label else "tab:red")


__all__ = [
    "DROPPED",
    "FUSED_FADE",
    "MERGE_ALPHA",
    "PANEL_INCHES",
    "TILE_EDGE",
    "draw_kept",
    "stage_image",
]
