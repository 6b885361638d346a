"""The charts ``static/curves.js`` draws, as the JSON endpoints describe them: one chart per
metric family (``val_loss`` and ``train_loss`` -> ``loss``), one series per run and metric,
labelled as the script labels them. A script can count the series of each chart from the JSON
without a browser."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

PREFIXES = ("train_", "val_", "eval_", "test_")


def family(name: str) -> str:
    """The chart a metric is drawn on: its name without a split prefix."""
    for prefix in PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def charts(runs: Sequence[tuple[str, Iterable[str]]]) -> dict[str, list[str]]:
    """``{family: [series label, ...]}`` for ``runs`` as ``(label, metric names)``, in the order
    the script draws them: a label is ``"LABEL METRIC"`` when several runs share the charts, the
    metric's name alone for one run."""
    out: dict[str, list[str]] = {}
    for label, names in runs:
        for name in sorted(names):
            shown = f"{label} {name}" if len(runs) > 1 else name
            out.setdefault(family(name), []).append(shown)
    return {name: out[name] for name in sorted(out)}
