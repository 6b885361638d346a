"""``arch runs plot`` as one library call: the registry gathers a metric's series, viz draws it.

Loads no torch: the series come from ``archlab.registry.series`` and the picture from
``archlab.viz``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from archlab.registry.series import PlotSummary, metric_series
from archlab.viz.curves import draw_curves
from archlab.viz.save import check_output

if TYPE_CHECKING:
    from archlab.registry import Registry


def plot_metric(registry: Registry, ident: str, metric: str, output: Path) -> PlotSummary:
    """Draw ``metric`` of run or CV group ``ident`` to ``output`` (.png, .svg or .pdf): the
    output is checked, the series gathered from the registry, then drawn."""
    path, fmt = check_output(output)
    summary = metric_series(registry, ident, metric, path, fmt)
    draw_curves(summary)
    return summary
