"""Maps of embeddings: ``arch embed``.

``draw_map(points, labels, path, title)`` draws 2-D map coordinates (``runners.embed_quality``'s
``reduce`` makes them) as a scatter, one marker per point coloured by its label, with a legend:
``tab10`` up to 10 classes, ``tab20`` up to 20, points along a continuous colour map (``turbo``)
above that, where the legend names each class up to ``LEGEND_UP_TO`` classes and a colour bar
takes its place beyond. ``texts`` writes a word beside each point (a token map: each row of the
embedding table labelled by its decoded token); when there are more than ``TEXTS_UP_TO`` points,
only that many are labelled, chosen to lie far apart on the map so that the words stay readable.
The axes carry no ticks: the coordinates of a t-SNE or UMAP map mean nothing on their own.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from archlab.textsafe import printable
from archlab.viz.save import PlotError, check_output, new_figure, plain_axes, save

LEGEND_UP_TO = 30  # classes named in a legend; a colour bar above
TEXTS_UP_TO = 80  # points labelled with their text; a spread-out subset above
CONTINUOUS = "turbo"


def draw_map(
    points: np.ndarray,
    labels: Sequence[Hashable] | np.ndarray | None,
    path: str | os.PathLike[str],
    title: str,
    *,
    texts: Sequence[str] | None = None,
) -> Any:
    """Draw ``points`` ``(n, 2)`` to ``path`` (.png, .svg or .pdf), atomically, coloured by
    ``labels`` (n of them; None: one colour, no legend) and annotated with ``texts`` (n of
    them, or None). Returns the matplotlib Figure. PlotError for a bad path, or labels or
    texts that do not match the points."""
    path, fmt = check_output(path)
    xy = np.asarray(points, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise PlotError(f"a map takes (n, 2) points, got shape {xy.shape}")
    for what, given in (("labels", labels), ("texts", texts)):
        if given is not None and len(given) != len(xy):
            raise PlotError(f"{len(given)} {what} for {len(xy)} points")

    fig = new_figure(figsize=(8.0, 6.5), layout="constrained", dpi=100)
    ax = fig.subplots()
    size = float(np.clip(12000 / max(len(xy), 1), 2.0, 30.0))  # marker area, points²
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, color="C0", alpha=0.8, linewidths=0)
    else:
        _scatter_classes(fig, ax, xy, np.asarray(labels, dtype=object), size)
    if texts is not None:
        for i in spread_subset(xy, TEXTS_UP_TO):
            ax.annotate(
                printable(str(texts[i])),
                xy[i],
                xytext=(3, 3),
                textcoords="offset points",
                fontsize="x-small",
            )
    plain_axes([ax])
    ax.set_title(title, fontsize="medium")
    save(fig, path, fmt)
    return fig


def classes_of(labels: np.ndarray) -> list[Any]:
    """The distinct labels, sorted when they can be compared, else in order of appearance."""
    distinct = list(dict.fromkeys(labels.tolist()))
    try:
        return sorted(distinct)
    except TypeError:
        return distinct


def class_colours(count: int) -> list[Any]:
    """A colour per class: tab10 up to 10 classes, tab20 up to 20, then ``CONTINUOUS``."""
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    cmap = colormaps[CONTINUOUS]
    return [cmap(i / (count - 1)) for i in range(count)]


def _scatter_classes(fig: Any, ax: Any, xy: np.ndarray, labels: np.ndarray, size: float) -> None:
    """One scatter per class (so the legend has an entry per class), in class order."""
    classes = classes_of(labels)
    colours = class_colours(len(classes))
    number = {cls: i for i, cls in enumerate(classes)}
    codes = np.array([number[lab] for lab in labels.tolist()], dtype=np.int64)  # (n,)
    for i, (cls, colour) in enumerate(zip(classes, colours, strict=True)):
        rows = np.flatnonzero(codes == i)
        ax.scatter(
            xy[rows, 0],
            xy[rows, 1],
            s=size,
            color=[colour],
            alpha=0.8,
            linewidths=0,
            label=printable(str(cls)),
        )
    if len(classes) <= LEGEND_UP_TO:
        ax.legend(
            title="label",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize="small",
            markerscale=max(1.0, 6.0 / np.sqrt(size)),
            ncols=1 if len(classes) <= 15 else 2,
            frameon=False,
        )
        return
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    mappable = ScalarMappable(Normalize(0, len(classes) - 1), colormaps[CONTINUOUS])
    bar = fig.colorbar(mappable, ax=ax, shrink=0.8)
    ticks = np.unique(np.linspace(0, len(classes) - 1, 8).round().astype(int))
    bar.set_ticks(ticks.tolist(), labels=[printable(str(classes[t])) for t in ticks])
    bar.set_label(f"label ({len(classes)} classes)")


def spread_subset(xy: np.ndarray, count: int) -> list[int]:
    """Up to ``count`` rows of ``xy`` ``(n, 2)`` that lie far apart: every row when there are
    no more than ``count``, else a greedy farthest-point pick from row 0 (deterministic), in row
    order."""
    n = len(xy)
    if n <= count:
        return list(range(n))
    chosen = [0]
    distance = np.linalg.norm(xy - xy[0], axis=1)
    for _ in range(count - 1):
        pick = int(distance.argmax())
        chosen.append(pick)
        distance = np.minimum(distance, np.linalg.norm(xy - xy[pick], axis=1))
    return sorted(chosen)


__all__ = [
    "CONTINUOUS",
    "LEGEND_UP_TO",
    "TEXTS_UP_TO",
    "class_colours",
    "classes_of",
    "draw_map",
    "spread_subset",
]
