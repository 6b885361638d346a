"""Relevance pictures: ``arch explain``.

``draw_heatmaps(panels, path, title)`` draws ``HeatmapPanels`` (plain numpy data, defined here)
as a grid: the input images in the first row, then one row per method with its relevance map over
each image. Each map is min-max normalised per sample for display only (the methods' raw values
differ in scale by orders of magnitude between methods, and a shared scale would blank most of
them), coloured with ``jet`` and laid over the image, as Chefer et al. show theirs.

For token inputs ``token_html`` writes each token with a background whose strength is its
normalised relevance, one line per sample and a section per method; ``token_ansi`` does the same
with 24-bit terminal colours.
"""

from __future__ import annotations

import html
import itertools
import os
from dataclasses import dataclass

import numpy as np

from archlab.files import replace_atomically
from archlab.textsafe import printable
from archlab.viz.save import PlotError, new_figure, output_format, plain_axes, save

PANEL_INCHES = 1.6  # width and height of one panel
OVERLAY_ALPHA = 0.5  # the heatmap's opacity over the image
COLORMAP = "jet"


def normalise(scores: np.ndarray) -> np.ndarray:
    """``scores`` `(B, ...)` rescaled to [0, 1] per sample (min-max); a constant map is 0."""
    x = np.asarray(scores, dtype=np.float64)
    flat = x.reshape(len(x), -1)
    low = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - low
    out = np.where(span > 0, (flat - low) / np.where(span > 0, span, 1.0), 0.0)
    return out.reshape(x.shape)


@dataclass(frozen=True)
class HeatmapPanels:
    """Everything ``draw_heatmaps`` draws: the images in [0, 1] (``(B, H, W, 3)``), whether they
    are grey, per method the raw relevance upsampled to pixels ``(B, H, W)`` and the explained
    class per sample, the model's predictions, the true labels (or None) and each sample's row
    in the data."""

    images: np.ndarray
    grey: bool
    maps: dict[str, np.ndarray]
    targets: dict[str, tuple[int, ...]]
    predictions: tuple[int, ...]
    labels: tuple[int, ...] | None
    indices: tuple[int, ...]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def draw_heatmaps(panels: HeatmapPanels, path: str | os.PathLike[str], title: str) -> None:
    """Draw ``panels`` to ``path`` (.png, .svg or .pdf), atomically: columns are samples, the
    first row the images (titled with label and prediction, red when wrong), then a row per
    method. PlotError if the file cannot be written."""
    from matplotlib import colormaps

    fmt = output_format(path)
    cmap = colormaps[COLORMAP]
    cols, rows = len(panels), 1 + len(panels.maps)
    fig = new_figure(
        figsize=(PANEL_INCHES * cols + 0.8, PANEL_INCHES * rows + 0.6),
        layout="constrained",
        dpi=100,
    )
    axes = fig.subplots(rows, cols, squeeze=False)
    for c in range(cols):
        image = panels.images[c]
        axes[0][c].imshow(image, vmin=0.0, vmax=1.0)
        text, colour = _title(panels, c)
        axes[0][c].set_title(text, fontsize="small", color=colour)
        for r, (method, maps) in enumerate(panels.maps.items(), start=1):
            heat = cmap(normalise(maps[c : c + 1])[0])[..., :3]
            axes[r][c].imshow((1 - OVERLAY_ALPHA) * image + OVERLAY_ALPHA * heat)
            target = panels.targets[method][c]
            if target != panels.predictions[c]:
                axes[r][c].set_title(f"class {target}", fontsize="x-small")
    for r, method in enumerate(panels.maps, start=1):
        axes[r][0].set_ylabel(method, fontsize="medium")
    axes[0][0].set_ylabel("input", fontsize="medium")
    plain_axes(axes)
    fig.suptitle(title, fontsize="medium")
    save(fig, path, fmt)


def _title(panels: HeatmapPanels, column: int) -> tuple[str, str]:
    """Sample ``column``'s title and colour (red for a wrong prediction)."""
    pred = panels.predictions[column]
    head = f"#{panels.indices[column]}"
    if panels.labels is None:
        return (f"{head} · pred {pred}", "black")
    label = panels.labels[column]
    return (f"{head} · label {label}\npred {pred}", "black" if pred == label else "tab:red")


# ---------------------------------------------------------------------------------- the tokens


@dataclass(frozen=True)
class TokenPanels:
    """Token inputs and their relevance: per sample the tokens as text, per method the raw
    scores ``(B, N)`` and targets (shown as text when ``target_text`` gives it), the
    predictions, labels (or None) and each sample's row in the data."""

    tokens: tuple[tuple[str, ...], ...]
    scores: dict[str, np.ndarray]
    targets: dict[str, tuple[str, ...]]
    predictions: tuple[str, ...]
    labels: tuple[str, ...] | None
    indices: tuple[int, ...]
    #: where a new part of each line starts (an encoder-decoder's target tokens after its
    #: source tokens): each part is normalised on its own for display
    parts: tuple[int, ...] = ()

    def shown(self, method: str) -> np.ndarray:
        """``method``'s scores in [0, 1] per sample and part, for colour."""
        scores = np.asarray(self.scores[method], dtype=np.float64)
        out = np.zeros_like(scores)
        edges = [0, *self.parts, scores.shape[1]]
        for start, end in itertools.pairwise(edges):
            if end > start:
                out[:, start:end] = normalise(scores[:, start:end])
        return out


def token_html(panels: TokenPanels, title: str) -> str:
    """The panels as a standalone HTML page: a section per method, a line per sample, each
    token on a red background as strong as its normalised relevance (hover: the raw value)."""
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}"
        ".sample{font-family:monospace;white-space:pre-wrap;margin:.4em 0 1em;line-height:1.6}"
        ".meta{color:#555;font-size:.85em}span.t{border-radius:2px}</style>",
        f"</head><body><h1>{html.escape(title)}</h1>",
    ]
    for method, scores in panels.scores.items():
        shown = panels.shown(method)
        parts.append(f"<h2>{html.escape(method)}</h2>")
        for row, tokens in enumerate(panels.tokens):
            parts.append(f'<div class="meta">{html.escape(_caption(panels, method, row))}</div>')
            spans = [
                f'<span class="t" title="{float(raw):.4g}" '
                f'style="background:rgba(220,30,30,{float(value):.3f})">{html.escape(token)}</span>'
                for token, value, raw in zip(tokens, shown[row], scores[row], strict=False)
            ]
            parts.append(f'<div class="sample">{"".join(spans)}</div>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def token_ansi(panels: TokenPanels, method: str) -> str:
    """``method``'s relevance in 24-bit terminal colour: a line per sample, each token on a red
    background as strong as its normalised relevance."""
    shown = panels.shown(method)
    lines = []
    for row, tokens in enumerate(panels.tokens):
        pieces = []
        for token, value in zip(tokens, shown[row], strict=False):
            fade = round(255 * (1 - float(value)))
            text = printable(token).replace("\n", "\\n")
            pieces.append(f"\x1b[48;2;255;{fade};{fade}m\x1b[30m{text}\x1b[0m")
        lines.append(f"{_caption(panels, method, row)}\n{''.join(pieces)}")
    return "\n".join(lines)


def _caption(panels: TokenPanels, method: str, row: int) -> str:
    label = "" if panels.labels is None else f" · label {panels.labels[row]!r}"
    return (
        f"#{panels.indices[row]}{label} · pred {panels.predictions[row]!r}"
        f" · explained {panels.targets[method][row]!r}"
    )


def write_html(text: str, path: str | os.PathLike[str]) -> None:
    """Write the page ``text`` to ``path`` atomically; PlotError if it cannot be written."""

    def dump(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)

    try:
        replace_atomically(path, dump)
    except OSError as exc:
        raise PlotError(
            f"cannot write {str(path)!r}: {exc.strerror or exc}; choose another -o path"
        ) from None


__all__ = [
    "COLORMAP",
    "OVERLAY_ALPHA",
    "HeatmapPanels",
    "TokenPanels",
    "draw_heatmaps",
    "normalise",
    "token_ansi",
    "token_html",
    "write_html",
]
