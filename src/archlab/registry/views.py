"""Views of registry runs as plain data: runs folded into CV groups, the compare table and flat
export rows (CSV and JSON), for Python users and for ``arch runs``, which only prints them.

Policies shared by every view:

- times in exports are ISO 8601 in UTC with milliseconds (``2026-12-06T06:01:03.120+00:00``);
- JSON is strict: tuples become lists, and NaN and the infinities the strings ``"nan"``,
  ``"inf"`` and ``"-inf"`` (``archlab.jsonpolicy``; ``null`` stays "no value");
- a run's duration is up to its end, up to now while it runs, else up to its last heartbeat.

Imports no torch, rich or click.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

from archlab.jsonpolicy import jsonable

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from archlab.registry.records import Aggregate, Change, CVGroup, Ranked, Run
    from archlab.registry.store import Registry

CV_FIELDS = ("group", "k", "fold", "n_train", "n_val", "train_sha256", "val_sha256")
MIXUP_FIELDS = (
    "alpha",
    "cutmix_alpha",
    "cutmix_minmax",
    "prob",
    "switch_prob",
    "mode",
    "label_smoothing",
    "off_epoch",
)
# headline metrics, shown before any other: accuracy-like, perplexity, loss; by split
MAIN_METRICS = tuple(
    f"{split}{name}"
    for split in ("val_", "eval_", "test_", "")
    for name in ("acc", "token_acc", "seq_acc", "ppl", "loss")
)
# the columns of an export with no rows
BASE_COLUMNS = ("id", "kind", "status", "spec_name", "spec_hash", "started", "ended", "duration")


# ----------------------------------------------------------------------------- values and times


def dumps(value: Any) -> str:
    """``value`` as indented strict JSON (NaN and infinity as archlab's JSON policy says:
    ``archlab.jsonpolicy``)."""
    return json.dumps(jsonable(value), indent=2, allow_nan=False)


def iso(ts: float | None) -> str | None:
    """A time as ISO 8601 in UTC (``2026-12-06T06:01:03.120+00:00``), for JSON and CSV."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


def when(ts: float | None) -> str:
    """A time in local time to the minute (``2026-12-06 07:01``), or ``-``."""
    return "-" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def seconds(run: Run) -> float:
    """How long ``run`` ran, in seconds: to its end, to now while it runs, else to its last
    heartbeat."""
    end = run.ended if run.ended is not None else (time.time() if run.status == "running" else None)
    return max(0.0, (end if end is not None else run.heartbeat) - run.started)


def span(seconds: float) -> str:
    """A duration as text: ``4.2s``, ``3m05s``, ``2h10m``, ``1d03h``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def duration(run: Run) -> str:
    """``span`` of the run's ``seconds``, with a ``+`` while it runs."""
    text = span(seconds(run))
    return f"{text}+" if run.status == "running" else text


def mixup_label(run: Run) -> str:
    """A run's mixup as ``ALPHA/CUTMIX_ALPHA`` (or ``ALPHA/MIN-MAX``), ``-`` without mixup."""
    m = run.mixup
    if m is None:
        return "-"
    cutmix = (
        f"{m.cutmix_minmax[0]:g}-{m.cutmix_minmax[1]:g}"
        if m.cutmix_minmax
        else f"{m.cutmix_alpha:g}"
    )
    return f"{m.alpha:g}/{cutmix}"


def metric_names(runs: Iterable[Run], extra: Iterable[Iterable[str]] = ()) -> list[str]:
    """Metric names by how many runs (and ``extra`` name sets) have them, then by name."""
    counts: dict[str, int] = {}
    for names in [*(r.metrics for r in runs), *extra]:
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    return sorted(counts, key=lambda n: (-counts[n], n))


def main_metrics(names: Iterable[str]) -> list[str]:
    """The headline metrics among ``names``: each task's validation (else eval, test, bare)
    accuracy-like metric, perplexity and loss, in MAIN_METRICS order."""
    present = set(names)
    return [n for n in MAIN_METRICS if n in present]


# ---------------------------------------------------------------------------------- export rows


def run_dict(run: Run) -> dict[str, Any]:
    """One run as a JSON document: ``Run.to_dict()`` with ISO 8601 times and its duration in
    seconds."""
    out = run.to_dict()
    for key in ("started", "ended", "heartbeat"):
        if key in out:
            out[key] = iso(out[key])
    out["duration"] = seconds(run)
    return out


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flat(f"{prefix}.{key}", item, out)
    elif isinstance(value, list | tuple):
        out[prefix] = json.dumps(jsonable(value))
    else:
        out[prefix] = jsonable(value)


def run_row(run: Run) -> dict[str, Any]:
    """One run as flat columns: cv.<field>, mixup.<field>, metrics.<name>, best.<name>,
    config.<key> (nested keys dotted), tags.<key>."""
    row: dict[str, Any] = {
        "id": run.id,
        "kind": run.kind,
        "status": run.status,
        "spec_name": run.spec_name,
        "spec_hash": run.spec_hash,
        "started": iso(run.started),
        "ended": iso(run.ended),
        "duration": round(seconds(run), 3),
        "error": run.error,
    }
    cv = dataclasses.asdict(run.cv) if run.cv else {}
    mixup = run.mixup.to_dict() if run.mixup else {}
    for name in CV_FIELDS:
        _flat(f"cv.{name}", cv.get(name), row)
    for name in MIXUP_FIELDS:
        _flat(f"mixup.{name}", mixup.get(name), row)
    for name, value in run.metrics.items():
        row[f"metrics.{name}"] = jsonable(value)
    for name, summary in run.summaries.items():
        row[f"best.{name}"] = jsonable(summary.best)
    _flat("config", run.config, row)
    _flat("tags", run.tags, row)
    return row


def write_csv(rows: list[dict[str, Any]], out: TextIO) -> None:
    """CSV with the union of the rows' columns: the first row's fixed ones, then metrics.*,
    best.*, config.*, tags.* and the rest, each sorted. No rows: just the base header."""
    fields: list[str] = [] if rows else list(BASE_COLUMNS)
    seen: set[str] = set()
    fixed = (
        [k for k in rows[0] if not k.startswith(("metrics.", "best.", "config.", "tags."))]
        if rows
        else []
    )
    for key in fixed:
        seen.add(key)
        fields.append(key)
    for prefix in ("metrics.", "best.", "config.", "tags.", ""):
        extra = sorted({k for r in rows for k in r if k not in seen and k.startswith(prefix)})
        seen.update(extra)
        fields.extend(extra)
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})


def csv_text(rows: list[dict[str, Any]]) -> str:
    """``rows`` as CSV text (see ``write_csv``)."""
    buffer = io.StringIO()
    write_csv(rows, buffer)
    return buffer.getvalue()


def export_rows(runs: Iterable[Run]) -> list[dict[str, Any]]:
    """The runs as flat export rows (see ``run_row``), in the order given."""
    return [run_row(r) for r in runs]


def export_csv(runs: Iterable[Run]) -> str:
    """The runs as CSV text: one row per run, a header of the union of their columns."""
    return csv_text(export_rows(runs))


def export_json(runs: Iterable[Run]) -> str:
    """The runs as a JSON list of ``run_dict`` documents, ending in a newline."""
    return dumps([run_dict(r) for r in runs]) + "\n"


# --------------------------------------------------------------------- ranked entries and folds


def ranked_dict(entry: Ranked) -> dict[str, Any]:
    """One entry of ``runs best`` as JSON: a run, or a CV group with its aggregate."""
    if entry.run is not None:
        return run_dict(entry.run)
    group, agg = entry.group, entry.aggregate
    assert group is not None and agg is not None
    return {
        "type": "cv_group",
        "id": group.id,
        "spec_hash": group.spec_hash,
        "k": group.k,
        "repeats": group.repeats,
        "metric": entry.metric,
        "value": "mean of final values over completed folds",
        "aggregate": {"mean": agg.mean, "std": agg.std, "n": agg.n, "min": agg.min,
                      "max": agg.max},
        "runs": group.runs,
    }  # fmt: skip


def ranked_row(entry: Ranked) -> dict[str, Any]:
    """One entry of ``runs best`` as a flat row: ``run_row`` for a run; a CV group's id, spec
    hash, the mean, std and n of the metric over its completed folds, and its runs."""
    if entry.run is not None:
        return run_row(entry.run)
    doc = ranked_dict(entry)
    return {
        "type": "cv_group",
        "id": doc["id"],
        "spec_hash": doc["spec_hash"],
        f"mean.{entry.metric}": doc["aggregate"]["mean"],
        f"std.{entry.metric}": doc["aggregate"]["std"],
        f"n.{entry.metric}": doc["aggregate"]["n"],
        "runs": " ".join(doc["runs"]),
    }


def extreme(
    points: list[tuple[int, float | None, float, float]], low: bool
) -> tuple[float | None, int | None]:
    """The lowest (``low``) or highest value of a series and its first step; NaN never counts."""
    numbers = [(value if low else -value, step) for step, _, value, _ in points if value == value]
    if not numbers:
        return None, None
    value, step = min(numbers)
    return (value if low else -value), step


def fold_dict(fold: Run) -> dict[str, Any]:
    """A CV fold in its group's JSON: fold number, id, status, split sizes, final metrics."""
    return {
        "fold": fold.cv.fold if fold.cv else None,
        "id": fold.id,
        "status": fold.status,
        "n_train": fold.cv.n_train if fold.cv else None,
        "n_val": fold.cv.n_val if fold.cv else None,
        "metrics": fold.metrics,
    }


# ------------------------------------------------------------------------------------ CV groups


@dataclass(frozen=True)
class GroupView:
    """A CV group with the folds of it that a query found, by fold then start."""

    group: CVGroup
    folds: list[Run]

    def summary(self) -> dict[str, Any]:
        """See ``group_summary``."""
        return group_summary(self.group, self.folds)


def grouped(registry: Registry, found: Iterable[Run]) -> list[Run | GroupView]:
    """Runs folded into their CV groups, in the order the first fold of each appears: a run
    outside any group stays a ``Run``, the folds of a group become one ``GroupView``."""
    entries: list[Run | str] = []
    folds: dict[str, list[Run]] = {}
    for run in found:
        if run.cv is None:
            entries.append(run)
        elif run.cv.group in folds:
            folds[run.cv.group].append(run)
        else:
            folds[run.cv.group] = [run]
            entries.append(run.cv.group)
    return [
        GroupView(
            registry.group(e),
            sorted(folds[e], key=lambda r: (r.cv.fold if r.cv else 0, r.started)),
        )
        if isinstance(e, str)
        else e
        for e in entries
    ]


def group_summary(group: CVGroup, folds: list[Run]) -> dict[str, Any]:
    """A CV group as one document: its settings, how many folds have each status, its folds'
    ids, each metric's aggregate over completed folds, and its span (``started`` and ``ended``
    as timestamps; ``ended`` only once every fold has ended)."""
    statuses: dict[str, int] = {}
    for run in folds:
        statuses[run.status] = statuses.get(run.status, 0) + 1
    ends = [r.ended for r in folds if r.ended is not None]
    return {
        "type": "cv_group",
        "id": group.id,
        "spec_name": folds[0].spec_name if folds else None,
        "spec_hash": group.spec_hash,
        "k": group.k,
        "splitter": group.splitter,
        "seed": group.seed,
        "repeats": group.repeats,
        "config": group.config,
        "status": statuses,
        "runs": [r.id for r in folds],
        "aggregates": {
            name: {"mean": a.mean, "std": a.std, "n": a.n, "min": a.min, "max": a.max}
            for name, a in group.aggregates.items()
        },
        "started": min(r.started for r in folds) if folds else None,
        "ended": max(ends) if len(ends) == len(folds) and ends else None,
    }


def group_export(group: CVGroup, folds: list[Run]) -> dict[str, Any]:
    """``group_summary`` with its times in ISO 8601, for JSON and CSV."""
    doc = group_summary(group, folds)
    return {**doc, "started": iso(doc["started"]), "ended": iso(doc["ended"])}


def grouped_json(entries: list[Run | GroupView]) -> list[dict[str, Any]]:
    """``grouped`` entries as JSON documents: ``group_export`` for a group, ``run_dict`` with
    ``"type": "run"`` for a run."""
    return [
        group_export(e.group, e.folds)
        if isinstance(e, GroupView)
        else {"type": "run", **run_dict(e)}
        for e in entries
    ]


def grouped_rows(entries: list[Run | GroupView]) -> list[dict[str, Any]]:
    """``grouped`` entries as flat rows: a group's metrics.<name> is the mean over its completed
    folds (with metrics.<name>.std and .n), a run's row is ``run_row`` with ``"type": "run"``."""
    rows = []
    for e in entries:
        if isinstance(e, GroupView):
            doc = group_export(e.group, e.folds)
            row: dict[str, Any] = {}
            for key in ("type", "id", "spec_name", "spec_hash", "k", "started", "ended"):
                row[key] = doc[key]
            row["status"] = json.dumps(doc["status"])
            row["runs"] = " ".join(doc["runs"])
            for name, agg in doc["aggregates"].items():
                row[f"metrics.{name}"] = agg["mean"]
                row[f"metrics.{name}.std"] = agg["std"]
                row[f"metrics.{name}.n"] = agg["n"]
            rows.append(row)
        else:
            rows.append({"type": "run", **run_row(e)})
    return rows


def listing_metric_names(entries: list[Run | GroupView]) -> list[str]:
    """The metric names of a grouped listing: its runs' and its groups' aggregated ones, by how
    many entries have them, then by name."""
    runs = [e for e in entries if not isinstance(e, GroupView)]
    return metric_names(runs, [e.group.aggregates for e in entries if isinstance(e, GroupView)])


@dataclass(frozen=True)
class GroupLine:
    """A CV group as one line of a listing: its folds' kinds (comma-joined), how many folds have
    each status (by status), its spec's name (else its hash's first 12 characters), the folds
    found of those expected (k x repeats), their mixup (``varies`` when they differ), its start
    (local, to the minute) and span (``+`` while a fold has not ended), and its aggregates."""

    id: str
    kind: str
    statuses: list[tuple[str, int]]
    spec: str
    folds: int
    expected: int
    mixup: str
    started: str
    duration: str
    aggregates: dict[str, Aggregate]


def group_line(view: GroupView) -> GroupLine:
    """``view`` as a ``GroupLine``."""
    group, folds = view.group, view.folds
    doc = group_summary(group, folds)
    mixups = {mixup_label(r) for r in folds}
    end = doc["ended"] if doc["ended"] is not None else time.time()
    return GroupLine(
        id=group.id,
        kind=",".join(sorted({r.kind for r in folds})),
        statuses=sorted(doc["status"].items()),
        spec=doc["spec_name"] or group.spec_hash[:12],
        folds=len({r.cv.fold for r in folds if r.cv}),
        expected=group.k * group.repeats,
        mixup=mixups.pop() if len(mixups) == 1 else "varies",
        started=when(doc["started"]),
        duration=span(end - doc["started"]) + ("" if doc["ended"] is not None else "+"),
        aggregates=group.aggregates,
    )


# ------------------------------------------------------------------------------- runs and groups


def select(registry: Registry, where: str | None = None, idents: Sequence[str] = ()) -> list[Run]:
    """The runs matching ``where``, newest first; with ``idents`` only those runs (a CV group's
    id standing for its folds), in the order named."""
    found = registry.runs(where=where)
    if idents:
        order = {run_id: i for i, run_id in enumerate(registry.expand(list(idents)))}
        found = sorted((r for r in found if r.id in order), key=lambda r: order[r.id])
    return found


@dataclass(frozen=True)
class Shown:
    """A run with its CV group and the group's folds, or (``run`` None) a CV group alone."""

    run: Run | None
    group: CVGroup | None
    folds: list[Run]

    def to_dict(self) -> dict[str, Any]:
        """As JSON: ``run_dict`` with a ``cv_group`` (the group with ``fold_dict`` folds) for a
        fold; the group's document with ``"type": "cv_group"`` for a group."""
        group_doc = (
            {**self.group.to_dict(), "folds": [fold_dict(f) for f in self.folds]}
            if self.group is not None
            else None
        )
        if self.run is None:
            return {"type": "cv_group", **(group_doc or {})}
        doc = run_dict(self.run)
        if group_doc is not None:
            doc["cv_group"] = group_doc
        return doc


def show(registry: Registry, ident: str) -> Shown:
    """Run or CV group ``ident`` with what ``arch runs show`` prints of it."""
    run: Run | None = None
    if registry.kind_of(ident) == "group":
        group: CVGroup | None = registry.group(ident)
    else:
        run = registry.get(ident)
        group = registry.group(run.cv.group) if run.cv is not None else None
    folds = registry.compare(group.runs) if group is not None else []
    return Shown(run, group, folds)


def provenance_rows(prov: dict[str, Any]) -> list[tuple[str, str]]:
    """A run's provenance as ``(field, text)`` rows: git commit (dirty or not), host, user, pid,
    cwd, the command and the versions, each where recorded."""
    rows: list[tuple[str, str]] = []
    git = prov.get("git")
    if git:
        rows.append(("git", f"{git.get('commit')}" + (" (dirty)" if git.get("dirty") else "")))
    elif "git" in prov:
        rows.append(("git", "-"))
    for key in ("host", "user", "pid", "cwd"):
        if prov.get(key) is not None:
            rows.append((key, str(prov[key])))
    if prov.get("argv"):
        rows.append(("command", " ".join(map(str, prov["argv"]))))
    versions = prov.get("versions") or {}
    if versions:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v)))
    return rows


def change_line(change: Change) -> str:
    """One difference as text: ``path: A -> B`` with the values as strict JSON."""
    a = json.dumps(jsonable(change.a))
    b = json.dumps(jsonable(change.b))
    return f"{change.path}: {a} -> {b}"


# -------------------------------------------------------------------------------------- compare


def differs(values: list[Any]) -> bool:
    """Whether the values of one compare row are not all the same."""
    return any(v != values[0] for v in values[1:])


def compare_rows(found: list[Run], show_all: bool = False) -> list[tuple[str, list[Any]]]:
    """The runs side by side: ``(field, [value per run])`` for kind, status, spec, times, CV,
    (an error), the config, mixup and tag fields (only those that differ unless ``show_all``;
    nested keys dotted) and every final metric."""
    rows: list[tuple[str, list[Any]]] = [
        ("kind", [r.kind for r in found]),
        ("status", [r.status for r in found]),
        ("spec", [r.spec_name for r in found]),
        ("spec_hash", [r.spec_hash[:12] for r in found]),
        ("started", [when(r.started) for r in found]),
        ("duration", [duration(r) for r in found]),
        ("cv", [f"{r.cv.group}/{r.cv.fold}" if r.cv else None for r in found]),
        ("cv.n_train", [r.cv.n_train if r.cv else None for r in found]),
        ("cv.n_val", [r.cv.n_val if r.cv else None for r in found]),
    ]
    if any(r.error for r in found):
        rows.append(("error", [r.error for r in found]))

    def section(prefix: str, dicts: list[dict[str, Any] | None]) -> None:
        flat: list[dict[str, Any]] = []
        for d in dicts:
            out: dict[str, Any] = {}
            if d is not None:
                for key, value in d.items():
                    _flat_keep(f"{prefix}.{key}", value, out)
            flat.append(out)
        keys = sorted({k for d in flat for k in d})
        for key in keys:
            values = [d.get(key) for d in flat]
            if show_all or differs(values):
                rows.append((key, values))

    section("config", [r.config for r in found])
    if show_all or differs([r.mixup for r in found]):
        rows.append(("mixup", [mixup_label(r) if r.mixup else None for r in found]))
    section("mixup", [r.mixup.to_dict() if r.mixup else None for r in found])
    section("tags", [dict(r.tags) for r in found])
    for name in metric_names(found):
        rows.append((f"metrics.{name}", [r.metrics.get(name) for r in found]))
    return rows


def _flat_keep(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """Like _flat, but keeps lists as values (they compare and print as JSON)."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flat_keep(f"{prefix}.{key}", item, out)
    else:
        out[prefix] = value


@dataclass(frozen=True)
class Comparison:
    """Runs side by side: the runs, and ``compare_rows`` of them."""

    runs: list[Run]
    rows: list[tuple[str, list[Any]]]

    def to_dict(self) -> dict[str, Any]:
        """As JSON: the run ids, and each row's field, values and whether they differ."""
        return {
            "runs": [r.id for r in self.runs],
            "rows": [{"field": f, "values": v, "differs": differs(v)} for f, v in self.rows],
        }


def comparison(registry: Registry, idents: Iterable[str], show_all: bool = False) -> Comparison:
    """The runs ``idents`` (a CV group's id standing for its folds, duplicates once) side by
    side; see ``compare_rows``."""
    found = registry.compare(registry.expand(list(idents)))
    return Comparison(found, compare_rows(found, show_all))
