"""How the CLI prints: the console, tables, numbers, times, user text and JSON output, shared by
every command group so one value reads the same in every command.

rich loads inside these functions, so importing this module keeps ``arch --help`` fast.
"""

from __future__ import annotations

import json
import math
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archlab.registry import views
from archlab.textsafe import printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from archlab.registry import Run

STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "interrupted": "yellow",
    "running": "cyan",
}


def new_console() -> Console:
    """A rich console: a terminal's own width (or $COLUMNS); piped output is not cut to 80
    columns: tables keep their natural width up to 200."""
    from rich.console import Console

    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200
    return Console(width=width, highlight=False)


def new_table(*columns: str, title: str | None = None) -> Table:
    """A table with ``columns``: metric columns (``metrics.NAME``, shown as NAME) and duration
    right-aligned; id, started and cv never wrap; a spec name folds rather than being cut."""
    from rich.table import Table

    out = Table(title=title, title_justify="left")
    for name in columns:
        right = name.startswith("metrics.") or name in ("duration",)
        out.add_column(
            name.removeprefix("metrics."),
            justify="right" if right else "left",
            no_wrap=name in ("id", "started", "cv"),
            overflow="fold" if name == "spec" else "ellipsis",  # a long name folds, never cut
        )
    return out


# ------------------------------------------------------------------------------------- numbers


def num(value: float | None) -> str:
    """A metric value to four significant digits; ``-`` for none, ``nan`` for NaN."""
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.4g}"


def mean_std(mean: float | None, std: float | None, n: int | None = None) -> str:
    """A mean over folds with its sample std, or the mean alone where the std is undefined
    (one fold): never a "± 0" that looks like agreement."""
    if std is None:
        return f"{num(mean)} ({n} fold)" if n == 1 else num(mean)
    return f"{num(mean)} ± {num(std)}"


def count(value: int | None) -> str:
    """An integer, or ``-`` for none."""
    return "-" if value is None else str(value)


def si(n: float) -> str:
    """``n`` with an SI suffix and two decimals from a thousand up (``12.35M``), else to three
    significant digits: parameter counts, FLOPs and rates alike."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.3g}"


def size(n_bytes: float) -> str:
    """A size in bytes as ``512 B``, ``1.5 KiB`` ... ``2.0 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------- times and text


def when_long(ts: float | None) -> str:
    """A time in local time to the second, with its UTC offset, or ``-``."""
    return "-" if ts is None else datetime.fromtimestamp(ts).astimezone().isoformat(" ", "seconds")


def status_markup(name: str) -> str:
    """A run's status as rich markup, coloured by STATUS_STYLE."""
    style = STATUS_STYLE.get(name)
    return f"[{style}]{name}[/]" if style else name


def cv_cell(run: Run) -> str:
    """A run's CV fold as ``GROUP/FOLD``, ``-`` outside a group."""
    return "-" if run.cv is None else f"{run.cv.group}/{run.cv.fold}"


def value_text(value: Any) -> str:
    """A config, tag or mixup value as text: JSON, except plain strings."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return num(value) if not value.is_integer() else f"{value:g}"
    return json.dumps(views.jsonable(value))


def cell(value: Any) -> str:
    """A table cell for any value: ``-`` for none, ``num`` for a float, else ``value_text``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return num(value)
    return value_text(value)


def escape(text: str) -> str:
    """User text (spec names, tags, config values) as inert rich markup: control characters shown
    as escapes, brackets not read as styles."""
    from rich.markup import escape as escape_markup

    return escape_markup(printable(text))


# -------------------------------------------------------------------------------------- output


def dumps(value: Any) -> str:
    """``value`` as indented strict JSON (archlab's JSON policy: ``archlab.jsonpolicy``)."""
    return views.dumps(value)


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, so a failure leaves the old file."""
    from archlab.files import replace_atomically

    def write(temporary: str) -> None:
        with open(temporary, "w", newline="", encoding="utf-8") as f:  # (a FIFO: written into)
            f.write(text)

    replace_atomically(path, write)
