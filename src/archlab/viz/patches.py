"""The patches each token pruning stage kept: ``arch prune show``.

``draw_kept(panels, path, title)`` draws the ``KeptPanels`` that
``archlab.runners.prune_show.kept_panels`` computes (images, patch grid and, per stage, which
patches are still visible, fused or merged), as the DynamicViT paper does: one row per image, the
image itself, then one panel per pruning stage in which the patches that stage (or an earlier one)
dropped are painted light grey; patches merged into one token (ToMe) share a colour, those folded
into EViT's fused token are faded. ``stage_image`` gives one such panel as an array.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from archlab.viz.save import new_figure, output_format, save

if TYPE_CHECKING:
    from archlab.runners.prune_show import KeptPanels, StagePanel

DROPPED = np.array([0.88, 0.88, 0.88])  # a dropped patch: light grey, as in DynamicViT's figures
TILE_EDGE = "0.62"  # the outline of each dropped patch, to tell it from light image content
FUSED_FADE = 0.7  # a patch folded into EViT's fused token: this much of DROPPED over the image
MERGE_ALPHA = 0.55  # opacity of a merged group's colour over its patches
PANEL_INCHES = 1.8  # width and height of one panel


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
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_linewidth(0.5)
            spine.set_color("0.6")
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
