"""The one place every archlab picture is checked and written.

``check_output(path)`` picks the format from the suffix (png, svg or pdf) and checks the folder
before any work is done; ``new_figure(...)`` gives a bare matplotlib ``Figure`` with the Agg
canvas attached (no pyplot: the user's global backend and open figures are left alone);
``save(fig, path, fmt)`` writes it through ``archlab.files.replace_atomically`` (a regular file
is replaced atomically, a device or FIFO is written into). Problems are ``PlotError``s (exit 2).
matplotlib loads only inside ``new_figure``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from archlab.errors import UserInputError
from archlab.files import replace_atomically

FORMATS = ("png", "svg", "pdf")


class PlotError(UserInputError):
    """A picture that cannot be drawn as asked: unknown metric, bad output path or format."""


def output_format(output: str | os.PathLike[str]) -> str:
    """The format named by the file's suffix (png, svg or pdf); PlotError otherwise."""
    path = Path(output)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise PlotError(f"cannot tell the format of {str(path)!r}: name a .png, .svg or .pdf file")
    return suffix


def check_output(output: str | os.PathLike[str]) -> tuple[Path, str]:
    """``output`` as a Path and its format, if a picture can go there (a .png, .svg or .pdf name
    in an existing, writable folder); PlotError naming the problem otherwise."""
    path = Path(output)
    fmt = output_format(path)
    parent = path.parent
    if not parent.is_dir():
        what = "is not a folder" if parent.exists() else "does not exist"
        raise PlotError(f"the folder {str(parent)!r} {what} (for -o {str(path)!r})")
    if path.is_dir():
        raise PlotError(f"{str(path)!r} is a folder, not a file name; give -o a .{fmt} file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PlotError(f"cannot write in the folder {str(parent)!r}; choose another -o path")
    return path, fmt


def new_figure(**kwargs: Any) -> Any:
    """A ``matplotlib.figure.Figure(**kwargs)`` drawn by the Agg canvas, outside pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def plain_axes(axes: Any) -> None:
    """Picture panels: no ticks, a thin grey frame."""
    for ax in getattr(axes, "flat", axes):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_linewidth(0.5)
            spine.set_color("0.6")


def save(fig: Any, path: str | os.PathLike[str], fmt: str) -> None:
    """Write ``fig`` to ``path`` as ``fmt``; a failed write leaves no partial file and is a
    PlotError."""
    try:
        replace_atomically(path, lambda temporary: fig.savefig(temporary, format=fmt))
    except OSError as exc:
        raise PlotError(
            f"cannot write {str(path)!r}: {exc.strerror or exc}; choose another -o path"
        ) from None


__all__ = [
    "FORMATS",
    "PlotError",
    "check_output",
    "new_figure",
    "output_format",
    "plain_axes",
    "save",
]
