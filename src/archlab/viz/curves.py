"""Learning curves: ``arch runs plot``.

``draw_curves(summary)`` draws a ``PlotSummary`` (``archlab.registry.series.metric_series``
gathers it): one metric of a run, or of every fold of a CV group, a thin line per fold, the mean
over folds at each step as a thick line with a +-1 std band, and a second panel with each fold's
final value as a bar beside the group's mean +- std.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from archlab.viz.save import new_figure, save

if TYPE_CHECKING:
    from archlab.registry.series import Curve, PlotSummary

MARKERS_UP_TO = 60  # points per curve drawn with markers; longer curves are plain lines


def _x_label(curves: Sequence[Curve]) -> str:
    """``epoch`` when every point was logged with its epoch as its step, else ``step``."""
    pairs = (zip(c.steps, c.epochs, strict=True) for c in curves)
    same = all(e is not None and e == s for points in pairs for s, e in points)
    return "epoch" if same else "step"


def draw_curves(summary: PlotSummary) -> None:
    """Draw ``summary`` to its ``path`` in its ``format``."""
    from matplotlib.ticker import MaxNLocator

    grouped = summary.group_id is not None
    fig = new_figure(figsize=(12.0, 4.8) if grouped else (7.5, 4.8), layout="constrained")
    if grouped:
        curves_ax, bars_ax = fig.subplots(1, 2, width_ratios=[2, 1])
    else:
        curves_ax, bars_ax = fig.subplots(), None

    for i, curve in enumerate(summary.curves):
        marker = "." if len(curve.steps) <= MARKERS_UP_TO else None
        curves_ax.plot(
            curve.steps,
            curve.values,
            color=f"C{i % 10}",
            linewidth=1.0 if grouped else 1.8,
            alpha=0.7 if grouped else 1.0,
            marker=marker,
            markersize=4,
            label=curve.label,
        )
    if grouped and summary.steps:
        low = [m - s for m, s in zip(summary.mean, summary.std, strict=True)]
        high = [m + s for m, s in zip(summary.mean, summary.std, strict=True)]
        curves_ax.fill_between(
            summary.steps, low, high, color="black", alpha=0.15, linewidth=0, label="± 1 std"
        )
        curves_ax.plot(summary.steps, summary.mean, color="black", linewidth=2.6, label="mean")
    curves_ax.set_xlabel(_x_label(summary.curves))
    curves_ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are integers
    curves_ax.set_ylabel(summary.metric)
    curves_ax.grid(alpha=0.3)
    if grouped:
        curves_ax.set_title("per fold, and the mean over folds at each step", fontsize="medium")
        curves_ax.legend(fontsize="small", ncols=2 if len(summary.curves) > 6 else 1)

    if bars_ax is not None:
        _draw_bars(bars_ax, summary)
    fig.suptitle(summary.title)
    save(fig, summary.path, summary.format)


def _draw_bars(ax: Any, summary: PlotSummary) -> None:
    curves = summary.curves
    positions = list(range(len(curves)))
    bars = ax.bar(
        positions,
        [c.final for c in curves],
        color=[f"C{i % 10}" for i in positions],
        alpha=0.85,
        hatch=["" if c.status == "completed" else "//" for c in curves],
        edgecolor="white",
    )
    ax.bar_label(bars, fmt="%.4g", fontsize="small")
    ax.set_xticks(
        positions,
        [c.label if c.status == "completed" else f"{c.label}\n({c.status})" for c in curves],
    )
    if summary.final_mean is not None:
        mean, std = summary.final_mean, summary.final_std
        if std is not None:  # None: one fold, whose sample std is undefined
            ax.axhspan(mean - std, mean + std, color="black", alpha=0.15, linewidth=0)
        spread = f" ± {std:.4g}" if std is not None else ""
        ax.axhline(
            mean,
            color="black",
            linewidth=2.0,
            label=f"mean {mean:.4g}{spread}\n(n={summary.final_n}, {summary.final_source})",
        )
        ax.legend(fontsize="small", loc="lower right")
    ax.margins(y=0.12)  # room above the tallest bar for its label
    ax.set_ylabel(f"final {summary.metric}")
    ax.set_title("final value per fold", fontsize="medium")
    ax.grid(axis="y", alpha=0.3)


__all__ = ["MARKERS_UP_TO", "draw_curves"]
