"""``arch embed``: a 2-D map of a model's embeddings, their nearest neighbours, and how good they
are, recorded where they are measurements.

``embed_run(source, data_source, ...)`` loads MODEL (a weights file archlab wrote) or RUN's best
checkpoint on the CPU (``runners.model_source``), embeds samples (``runners.embed.embed_rows``:
the representation the head reads, or ``node``), reduces them to 2-D (``runners.embed_quality``:
t-SNE, UMAP or PCA, seeded) and draws the map coloured by label (``viz.embed.draw_map``).

Which samples: a RUN without ``data_source`` maps its own validation split (``split="val"``,
rebuilt from its recorded configuration) or every row of its data (``split="all"``); with
``data_source`` (or a MODEL file) every row of that data.

Quality, for labelled data (classifiers):

- ``knn_acc``: k-nearest-neighbour accuracy of the embeddings by cosine similarity (``k``, 5 by
  default). For a RUN's own data the reference set is its training split and the queries its
  validation split (what the model did not train on); otherwise leave-one-out over the mapped
  samples.
- ``trustworthiness``: how well the 2-D map keeps each sample's ``k`` nearest neighbours
  (``sklearn.manifold.trustworthiness``), over the mapped samples.
- ``knn_acc_<baseline>``: the same kNN accuracy on the raw inputs (``baseline``: ``raw`` pixels
  or bag-of-tokens counts, ``onehot`` length-normalised one-hot / bag-of-tokens vectors), so the
  representation is compared with no representation at all.

With a registry and a RUN these are recorded as an ``eval`` run linked to it (tag and config
``evaluates``, ``evaluation: embed``; the picture and the points as artifacts), so ``arch runs``
compares them. A CV group (``embed_group``) gets one such eval run per fold, inside a CV group
of their own with the same splits, so ``arch runs`` shows their mean ± std.

Token models: ``embed_tokens`` maps the rows of the token embedding table, each labelled by its
decoded token, and ``neighbours`` lists the nearest tokens (or samples) by cosine similarity.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from archlab.errors import UserInputError
from archlab.runners.model_source import load_source, token_speller

if TYPE_CHECKING:
    from archlab.compiler.model import CompiledModel
    from archlab.registry import Registry, Run
    from archlab.runners.data import TaskData

METHODS = ("tsne", "umap", "pca")
BASELINES = ("raw", "onehot")
SPLITS = ("val", "all")


class EmbedRunError(UserInputError):
    """An ``arch embed`` request that cannot be served: the message says why."""


@dataclass(frozen=True)
class EmbedReport:
    """What ``embed_run`` (or ``embed_tokens``) computed and drew.

    ``points`` `(n, 2)` the map; ``indices`` each point's row in the data (or token id);
    ``labels`` each point's label as text (None without labels); ``quality`` the figures
    (``knn_acc``, ``trustworthiness``, ``knn_acc_<baseline>``; empty without labels);
    ``eval_run`` the eval run recording them (None when nothing was recorded);
    ``neighbours`` (index, label, cosine similarity) of the nearest samples or tokens asked for.
    """

    path: Path | None
    method: str
    model_name: str
    where: str
    indices: tuple[int, ...]
    points: np.ndarray
    labels: tuple[str, ...] | None
    quality: dict[str, float] = field(default_factory=dict)
    eval_run: str | None = None
    neighbours: tuple[tuple[int, str, float], ...] = ()
    query: str | None = None

    def points_json(self) -> dict[str, Any]:
        """``{"method": ..., "points": [{"x", "y", "label", "index"}, ...]}``, one per sample."""
        labels = self.labels or (None,) * len(self.indices)
        return {
            "method": self.method,
            "points": [
                {"x": float(x), "y": float(y), "label": label, "index": int(index)}
                for (x, y), label, index in zip(self.points, labels, self.indices, strict=True)
            ],
        }

    def to_dict(self) -> dict[str, Any]:
        """The report for ``--json`` on the terminal: everything but the points."""
        return {
            "output": None if self.path is None else str(self.path),
            "method": self.method,
            "model": self.model_name,
            "data": self.where,
            "samples": len(self.indices),
            "quality": self.quality,
            "eval_run": self.eval_run,
            "neighbours": [
                {"index": i, "label": label, "similarity": s} for i, label, s in self.neighbours
            ],
        }


@dataclass(frozen=True)
class _Request:
    """The checked options of one map."""

    node: str | None
    pool: str | None
    method: str
    seed: int
    k: int
    baseline: str | None
    k_near: int


@dataclass(frozen=True)
class _Plan:
    """Which rows are mapped, and how the quality is measured: ``train`` / ``val`` the run's
    own split (kNN from training to validation), or None (leave-one-out over ``rows``)."""

    data: TaskData
    rows: np.ndarray
    train: np.ndarray | None
    val: np.ndarray | None
    where: str
    split: str


def embed_run(
    source: str,
    data_source: str | None = None,
    *,
    node: str | None = None,
    pool: str | None = None,
    method: str = "tsne",
    split: str | None = None,
    seed: int = 0,
    k: int = 5,
    baseline: str | None = None,
    output: str | os.PathLike[str] | None = None,
    json_path: str | os.PathLike[str] | None = None,
    neighbours: int | None = None,
    neighbours_k: int = 10,
    registry_url: str | None = None,
    record: bool = True,
) -> EmbedReport:
    """Map MODEL or RUN ``source``'s embeddings of ``data_source`` (or of the run's own data) to
    ``output`` (default ``embed.png``), with the quality figures (module docstring); with a RUN
    the figures are recorded as an eval run in its registry unless ``record`` is False.
    ``neighbours``: a data row whose ``neighbours_k`` nearest mapped samples to list."""
    request = _check(node, pool, method, seed, k, baseline, neighbours_k)
    path = _picture_path(output)
    model, model_name, run = load_source(source, registry_url, "arch embed", EmbedRunError)
    plan = _plan(model, source, data_source, split, run)
    report = _map(model, model_name, plan, request, path, neighbours, neighbours_k)
    if json_path is not None:
        _write_json(json_path, report.points_json())
    if record and run is not None and report.quality:
        from archlab.registry import Registry

        with Registry(registry_url, create=False) as registry:
            eval_id = _record(registry, run.id, model, report, request, plan, json_path)
        report = dataclasses.replace(report, eval_run=eval_id)
    return report


def embed_group(
    group_id: str,
    registry_url: str | None,
    *,
    node: str | None = None,
    pool: str | None = None,
    method: str = "tsne",
    seed: int = 0,
    k: int = 5,
    baseline: str | None = None,
    output: str | os.PathLike[str] | None = None,
    json_path: str | os.PathLike[str] | None = None,
    record: bool = True,
) -> tuple[list[EmbedReport], str | None, dict[str, Any]]:
    """``embed_run`` on every completed fold of CV group ``group_id``, each on its own
    validation fold; the first fold's map goes to ``output`` (and ``json_path``). Recorded as
    one eval run per fold inside a new CV group with the same splits. Returns the reports, the
    eval group's id (None when not recorded) and its aggregates ``{metric: Aggregate}``."""
    from archlab.registry import Registry

    request = _check(node, pool, method, seed, k, baseline, 10)
    path = _picture_path(output)
    with Registry(registry_url, create=False) as registry:
        group = registry.group(group_id)
        folds = registry.completed_folds(group_id)
        if not folds:
            raise EmbedRunError(f"CV group {group_id} has no completed fold to map")
        mapped: list[tuple[int, str, CompiledModel, _Plan, EmbedReport]] = []
        for position, (fold, run_id) in enumerate(sorted(folds.items())):
            model, model_name, run = load_source(run_id, registry_url, "arch embed", EmbedRunError)
            assert run is not None
            plan = _plan(model, run_id, None, "val", run)
            drawn = path if position == 0 else None
            report = _map(model, f"{model_name} (fold {fold})", plan, request, drawn, None, 10)
            mapped.append((fold, run_id, model, plan, report))
        if json_path is not None:
            _write_json(json_path, mapped[0][4].points_json())
        # every fold mapped before anything is recorded: a failing fold records nothing
        reports: list[EmbedReport] = []
        eval_group = None
        for position, (fold, run_id, model, plan, report) in enumerate(mapped):
            if record and report.quality:
                if eval_group is None:
                    settings = {"evaluates": group_id, "evaluation": "embed", **_settings(request)}
                    eval_group = registry.start_cv(
                        model.spec, settings, k=group.k, splitter=group.splitter,
                        seed=group.seed, shuffle=group.shuffle, stratified=group.stratified,
                        grouped=group.grouped, repeats=group.repeats, library=group.library,
                    )  # fmt: skip
                eval_id = _record(
                    registry, run_id, model, report, request, plan,
                    json_path if position == 0 else None, (eval_group.id, fold),
                )  # fmt: skip
                report = dataclasses.replace(report, eval_run=eval_id)
            reports.append(report)
        aggregates = dict(registry.group(eval_group.id).aggregates) if eval_group else {}
    return reports, None if eval_group is None else eval_group.id, aggregates


def embed_tokens(
    source: str,
    *,
    method: str = "tsne",
    seed: int = 0,
    limit: int | None = None,
    output: str | os.PathLike[str] | None = None,
    json_path: str | os.PathLike[str] | None = None,
    neighbours: str | None = None,
    neighbours_k: int = 10,
    registry_url: str | None = None,
) -> EmbedReport:
    """Map the rows of MODEL or RUN ``source``'s token embedding table (the first ``limit``
    ids, all by default), each point labelled by its decoded token; ``neighbours``: a token
    (its text, or ``#ID``) whose ``neighbours_k`` nearest tokens by cosine similarity to list."""
    from archlab.runners.embed import token_table
    from archlab.runners.embed_quality import neighbours as nearest
    from archlab.runners.embed_quality import reduce

    request = _check(None, None, method, seed, 5, None, neighbours_k)
    if limit is not None and limit < 3:
        raise EmbedRunError(f"--limit is how many tokens to map: at least 3, not {limit}")
    path = _picture_path(output)
    model, model_name, run = load_source(source, registry_url, "arch embed", EmbedRunError)
    name, table = token_table(model)
    _, spell = token_speller(model, dict(run.config or {}) if run is not None else {}, None)
    words = [spell(i) for i in range(len(table))]
    found: tuple[tuple[int, str, float], ...] = ()
    query = None
    if neighbours is not None:
        query = neighbours
        token = _token_id(neighbours, words)
        found = tuple((i, words[i], s) for i, s in nearest(table, token, k=request.k_near))
    ids = np.arange(len(table) if limit is None else min(limit, len(table)))
    points = reduce(table[ids], method, seed=seed)
    title = (
        f"{model.spec.name or model.spec_hash[:12]} · {model_name}\n{name} token table ({method})"
    )
    shown = tuple(words[i] for i in ids)
    _draw(points, None, path, title, shown)
    report = EmbedReport(
        path, method, model_name, f"the `{name}` token table", tuple(int(i) for i in ids),
        points, shown, {}, None, found, query,
    )  # fmt: skip
    if json_path is not None:
        _write_json(json_path, report.points_json())
    return report


def _token_id(query: str, words: Sequence[str]) -> int:
    """The id a ``--neighbours`` token names: ``#ID``, or the token whose text is ``query``."""
    if query.startswith("#") and query[1:].isdigit():
        token = int(query[1:])
        if token >= len(words):
            raise EmbedRunError(f"token {query} lies outside the vocabulary of {len(words)}")
        return token
    matches = [i for i, w in enumerate(words) if w == query] or [
        i for i, w in enumerate(words) if w.strip() == query.strip()
    ]
    if not matches:
        raise EmbedRunError(
            f"no token spells {query!r}; give its text exactly as decoded, or its id as #ID "
            f"(0..{len(words) - 1})"
        )
    return matches[0]


def _check(
    node: str | None,
    pool: str | None,
    method: str,
    seed: int,
    k: int,
    baseline: str | None,
    neighbours_k: int,
) -> _Request:
    if method not in METHODS:
        raise EmbedRunError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if baseline is not None and baseline not in BASELINES:
        raise EmbedRunError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")
    if pool is not None and pool not in ("cls", "mean"):
        raise EmbedRunError(f"--pool is cls or mean, not {pool!r}")
    if k < 1 or neighbours_k < 1:
        raise EmbedRunError(f"k must be at least 1 (kNN k {k}, neighbours {neighbours_k})")
    return _Request(node, pool, method, seed, k, baseline, neighbours_k)


def _settings(request: _Request) -> dict[str, Any]:
    return {
        "method": request.method,
        "node": request.node,
        "pool": request.pool,
        "seed": request.seed,
        "k": request.k,
        "baseline": request.baseline,
    }


def _plan(
    model: CompiledModel, source: str, data_source: str | None, split: str | None, run: Run | None
) -> _Plan:
    """The rows to map and how quality is measured (``_Plan``)."""
    from archlab.runners.data import load_data
    from archlab.runners.train import _recorded_config, fold_rows

    if split is not None and split not in SPLITS:
        raise EmbedRunError(f"--split is val or all, not {split!r}")
    recorded = _recorded_config(run.config or {}) if run is not None else None
    seed = recorded.seed if recorded is not None else 0
    if data_source is not None:
        if split == "val":
            raise EmbedRunError(
                "--split val maps a run's own validation split; with --data every row is mapped "
                "(leave out --data, or --split)"
            )
        data = load_data(data_source, model.spec, seed=seed)
        rows = np.arange(len(data), dtype=np.int64)
        return _Plan(data, rows, None, None, data.source, "all")
    if run is None or recorded is None:
        raise EmbedRunError(f"{source} is a weights file: say which data with --data SOURCE")
    data = load_data(recorded.data, model.spec, seed=seed)
    train, val = (np.array(r, dtype=np.int64) for r in fold_rows(run, data, recorded, "map"))
    if (split or "val") == "val":
        return _Plan(data, val, train, val, f"the validation split of run {run.id}", "val")
    rows = np.arange(len(data), dtype=np.int64)
    return _Plan(data, rows, train, val, f"every row of run {run.id}'s data", "all")


def _map(
    model: CompiledModel,
    model_name: str,
    plan: _Plan,
    request: _Request,
    path: Path | None,
    neighbours: int | None,
    neighbours_k: int,
) -> EmbedReport:
    """Embed ``plan``'s rows, reduce them to 2-D, measure the quality and draw the map."""
    from archlab.runners.embed import embed_rows
    from archlab.runners.embed_quality import neighbours as nearest
    from archlab.runners.embed_quality import reduce

    data, rows = plan.data, plan.rows
    if len(rows) < 3:
        raise EmbedRunError(f"{plan.where} has {len(rows)} samples; a map needs at least 3")
    emb = embed_rows(model, data, rows, node=request.node, pool=request.pool)
    labels = _labels(data, rows)
    # every embedding before the reduction: the model never runs after a map's libraries
    reference = _reference(model, plan, request, emb) if labels is not None else None
    points = reduce(emb, request.method, seed=request.seed)
    quality = _quality(plan, request, emb, points, reference) if labels is not None else {}
    found: tuple[tuple[int, str, float], ...] = ()
    query = None
    if neighbours is not None:
        at = np.flatnonzero(rows == neighbours)
        if at.size == 0:
            raise EmbedRunError(
                f"--neighbours {neighbours} is not a row of {plan.where} "
                f"({len(rows)} samples; give a row of the data that is mapped)"
            )
        query = f"row {neighbours}"
        found = tuple(
            (int(rows[i]), labels[i] if labels is not None else "", float(similarity))
            for i, similarity in nearest(emb, int(at[0]), k=neighbours_k)
        )
    spec_name = model.spec.name or model.spec_hash[:12]
    title = f"{spec_name} · {model_name}\n{plan.where} ({request.method}, seed {request.seed})"
    _draw(points, labels, path, title, None)
    indices = tuple(int(i) for i in rows)
    return EmbedReport(
        path, request.method, model_name, plan.where, indices, points, labels, quality, None,
        found, query,
    )  # fmt: skip


def _labels(data: TaskData, rows: np.ndarray) -> tuple[str, ...] | None:
    """Each mapped sample's class as text, for classifiers' data; None otherwise."""
    if data.task != "classify":
        return None
    return tuple(str(int(t)) for t in data.targets[rows].tolist())


def _reference(
    model: CompiledModel, plan: _Plan, request: _Request, emb: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """The training and validation embeddings kNN accuracy compares (a run's own data), else
    None (leave-one-out over the mapped samples)."""
    from archlab.runners.embed import embed_rows

    if plan.train is None or plan.val is None:
        return None
    node, pool = request.node, request.pool
    train = embed_rows(model, plan.data, plan.train, node=node, pool=pool)
    val = (
        emb if plan.split == "val" else embed_rows(model, plan.data, plan.val, node=node, pool=pool)
    )
    return train, val


def _quality(
    plan: _Plan,
    request: _Request,
    emb: np.ndarray,
    points: np.ndarray,
    reference: tuple[np.ndarray, np.ndarray] | None,
) -> dict[str, float]:
    """``knn_acc``, ``trustworthiness`` and ``knn_acc_<baseline>`` (module docstring)."""
    from archlab.runners.embed_quality import (
        baseline_features,
        knn_accuracy,
        knn_loo_accuracy,
        trustworthiness,
    )

    data, k = plan.data, request.k
    y = data.targets.numpy()
    out: dict[str, float] = {}

    def base(rows: np.ndarray) -> np.ndarray:
        return baseline_features(data.subset(rows), request.baseline or "raw")

    name = f"knn_acc_{request.baseline}"
    if reference is not None and plan.train is not None and plan.val is not None:
        train, val = plan.train, plan.val
        out["knn_acc"] = knn_accuracy(reference[0], y[train], reference[1], y[val], k=k)
        if request.baseline is not None:
            out[name] = knn_accuracy(base(train), y[train], base(val), y[val], k=k)
    else:
        out["knn_acc"] = knn_loo_accuracy(emb, y[plan.rows], k=k)
        if request.baseline is not None:
            out[name] = knn_loo_accuracy(base(plan.rows), y[plan.rows], k=k)
    out["trustworthiness"] = trustworthiness(emb, points, k=min(k, (len(emb) - 1) // 2))
    return out


def _record(
    registry: Registry,
    run_id: str,
    model: CompiledModel,
    report: EmbedReport,
    request: _Request,
    plan: _Plan,
    json_path: str | os.PathLike[str] | None,
    fold: tuple[str, int] | None = None,
) -> str:
    """Record ``report``'s quality as an ``eval`` run linked to training run ``run_id`` (inside
    the eval CV group ``fold[0]`` as fold ``fold[1]`` when given), the map and points attached.
    Returns its id."""
    registry.declare_metrics({name: "max" for name in report.quality})
    config = {
        "evaluates": run_id,
        "evaluation": "embed",
        **_settings(request),
        "split": plan.split,
        "data": plan.data.source,
        "data_sha256": plan.data.content_sha256,
        "examples": len(plan.rows),
        "quality": "knn from the training split to the validation split"
        if plan.train is not None
        else "knn leave-one-out over the mapped samples",
    }
    placed: dict[str, Any] = {}
    if fold is not None and plan.train is not None and plan.val is not None:
        placed = {
            "cv_group": fold[0],
            "fold": fold[1],
            "train_indices": plan.train.tolist(),
            "val_indices": plan.val.tolist(),
        }
    tags = {"evaluates": run_id, "evaluation": "embed"}
    with registry.start_run(model.spec, config, kind="eval", tags=tags, **placed) as handle:
        handle.log_metrics(report.quality, step=0)
        if report.path is not None:
            handle.log_artifact(report.path, "embedding-map", copy=True)
        if json_path is not None:
            handle.log_artifact(json_path, "embedding-points", copy=True)
    return str(handle.id)


def _draw(
    points: np.ndarray,
    labels: Sequence[str] | None,
    path: Path | None,
    title: str,
    texts: Sequence[str] | None,
) -> None:
    from archlab.viz.embed import draw_map

    if path is not None:
        draw_map(points, labels, path, title, texts=texts)


def _picture_path(output: str | os.PathLike[str] | None) -> Path:
    """Where the map goes (a .png, .svg or .pdf in an existing folder), checked before work."""
    from archlab.viz.save import PlotError, check_output

    try:
        return check_output(output or "embed.png")[0]
    except PlotError as exc:
        raise EmbedRunError(str(exc)) from None


def _write_json(path: str | os.PathLike[str], value: dict[str, Any]) -> None:
    from archlab.files import replace_atomically

    def write(temporary: str) -> None:
        Path(temporary).write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")

    try:
        replace_atomically(path, write)
    except OSError as exc:
        raise EmbedRunError(f"cannot write {os.fspath(path)!r}: {exc.strerror or exc}") from None


__all__ = [
    "BASELINES",
    "METHODS",
    "EmbedReport",
    "EmbedRunError",
    "embed_group",
    "embed_run",
    "embed_tokens",
]
