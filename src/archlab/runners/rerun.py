"""``arch train --rerun RUN`` and ``arch runs verify RUN``: a recorded training run trained again
from the registry alone, and compared with the original.

``rerun`` reads the run's spec (stored in the registry), its resolved configuration, its seeds
(``init_seed``, ``data_seed``), its thread count and torch determinism settings (applied again
while it trains), checks the data against its recorded content hash and the rebuilt split against
its recorded fingerprints, and records a new run tagged ``reruns=RUN``. On the same machine, the
same CPU thread count and the same packages, its metric series equal the original's bit for bit.

``verify`` re-runs, then compares every metric series (``compared``: all but the metrics that
measure time, such as ``samples_per_s``) step by step, exactly, and lists the recorded settings
(versions, packages, threads, determinism, git commit and uncommitted changes, device, host)
beside the re-run's own, so a difference can be traced to what changed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from archlab.compiler.devices import resolve_device
from archlab.errors import UserInputError
from archlab.metrics import measures_time
from archlab.registry import Registry, indices_sha256
from archlab.registry.provenance import working_tree_diff
from archlab.registry.records import Run
from archlab.runners.data import load_data
from archlab.runners.lifecycle import interruptible, running
from archlab.runners.reproducibility import applied, determinism_settings, keep_changes
from archlab.runners.splits import Fold, SplitPlan
from archlab.runners.train import (
    Progress,
    TrainReport,
    _fit_fold,
    _init_plan,
    _record,
    _recorded_config,
    _split,
)
from archlab.specs import load_spec

#: What a run must have recorded to be trained again exactly: its task and data (with the data's
#: content hash), both seeds, its CPU thread count and torch's determinism settings. Runs of an
#: archlab older than ``--rerun`` lack the last three.
NEEDED = ("task", "data", "data_sha256", "init_seed", "data_seed", "threads", "determinism")

#: The tag a re-run carries: the run it re-runs.
RERUNS_TAG = "reruns"


def rerun(
    run_id: str,
    registry: Registry,
    *,
    progress: Progress | None = None,
    threads: int | None = None,
) -> TrainReport:
    """Train run ``run_id`` again from what the registry recorded, as a new run tagged
    ``reruns=run_id`` alone (outside any CV group, with the same split). ``threads``: train on that
    many CPU threads rather than the recorded count. Bad input (an unknown run, one that is not
    a completed training, one recorded without what a re-run needs, data that changed, a split
    that cannot be rebuilt) raises ``UserInputError`` before anything is recorded."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserInputError("--rerun runs in a single process: start it without torchrun")
    with interruptible():
        run = registry.get(run_id)
        check_rerunnable(run)
        config = _recorded_config(run.config)
        spec = load_spec(registry.spec_document(run.spec_hash))
        data = load_data(config.data, spec, seed=config.seed)
        if data.content_sha256 != run.config["data_sha256"]:
            raise UserInputError(
                f"the data {config.data!r} changed since run {run_id} was trained: its content "
                f"hash was {run.config['data_sha256']} and is {data.content_sha256} now; a "
                "re-run would train on other data"
            )
        plan = _split(data, config)
        fold = _recorded_fold(run, registry, plan)
        record = _record(config, data, resolve_device(config.device), None)
        record.update(init_seed=run.config["init_seed"], data_seed=run.config["data_seed"])
        if config.init is not None:
            init = _init_plan(spec, config.init, registry)
            if init.sha256 != run.config.get("init_sha256"):
                raise UserInputError(
                    f"--init {config.init}: its weights changed since run {run_id} was trained "
                    f"(SHA-256 {run.config.get('init_sha256')} then, {init.sha256} now)"
                )
            record.update(init_sha256=init.sha256, init_fresh=list(init.fresh))
        teacher_run = run.config.get("teacher_run")
        for key in ("teacher", "teacher_run"):
            if key in run.config:
                record[key] = run.config[key]
        report = TrainReport(spec, data, plan, None, config=config)
        changes = working_tree_diff()
        first = registry.metric_history(run.id, "train_loss")
        base = 0 if first and first[0][0] == 0 else 1  # runs of older archlab: epochs from 0
        with applied(run.config["determinism"], threads or int(run.config["threads"])):
            # what it trains under, as applied (the inter-op threads stay as they are)
            record.update(threads=torch.get_num_threads(), determinism=determinism_settings())
            # the original's own tags (name, --tag, a sweep's) stay in its config record: the
            # re-run is not one more run of the original's name, group or sweep
            tags = {RERUNS_TAG: run.id}
            with registry.start_run(
                spec,
                record,
                train_indices=fold.train.tolist(),
                val_indices=fold.val.tolist(),
                mixup=config.mixup_setting(),
                tags=tags,
            ) as handle, running(handle.id):  # fmt: skip
                keep_changes(handle, registry, changes)
                result = _fit_fold(
                    handle, registry, spec, data, config, plan, fold,
                    int(run.config["init_seed"]), progress, teacher_run=teacher_run,
                    epoch_base=base, data_seed=int(run.config["data_seed"]),
                )  # fmt: skip
        report.runs.append(handle.id)
        report.results.append(result)
    return report


def check_rerunnable(run: Run) -> None:
    """Refuse (``UserInputError``) a run that cannot be trained again exactly: not a training,
    not completed, trained on several processes, or recorded without what a re-run needs."""
    if run.kind != "train":
        what = f" (it evaluates run {run.tags['evaluates']})" if "evaluates" in run.tags else ""
        article = "an" if run.kind[:1] in tuple("aeiou") else "a"
        raise UserInputError(
            f"run {run.id} is {article} {run.kind} run{what}, not a training: only train runs "
            "can be re-run"
        )
    if run.status != "completed":
        hint = " (continue it with arch train --resume)" if run.status != "running" else ""
        raise UserInputError(
            f"run {run.id} is {run.status}: only a completed training can be re-run and "
            f"compared{hint}"
        )
    missing = [key for key in NEEDED if key not in run.config]
    if missing:
        raise UserInputError(
            f"run {run.id} lacks what a re-run needs: {', '.join(missing)} (not recorded: it "
            "was trained by an older archlab or not by arch train); train its spec again "
            "with arch train to get a run that can be re-run"
        )
    if int(run.config.get("world_size", 1)) > 1:
        raise UserInputError(
            f"run {run.id} was trained on {run.config['world_size']} processes (torchrun); "
            "--rerun trains in one, which gives other batches and other numbers"
        )


def _recorded_fold(run: Run, registry: Registry, plan: SplitPlan) -> Fold:
    """The fold ``run`` trained on, from the split its configuration rebuilds, checked against
    the training and validation fingerprints it recorded."""
    index = run.cv.fold if run.cv is not None and run.cv.fold is not None else 0
    if index >= len(plan.folds):
        raise UserInputError(
            f"run {run.id}'s fold {index} cannot be rebuilt: the split has {len(plan.folds)} folds"
        )
    fold = plan.folds[index]
    recorded = registry.split_fingerprints(run.id)
    differ = [
        part
        for part, key, rows in (("training", "train", fold.train), ("validation", "val", fold.val))
        if recorded[f"{key}_sha256"] not in (None, indices_sha256(np.asarray(rows).tolist()))
    ]
    if differ:
        raise UserInputError(
            f"run {run.id}'s split cannot be rebuilt: its {' and '.join(differ)} indices differ "
            "from the fingerprints it recorded (the splitter or the data's order changed)"
        )
    return fold


# ----------------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class SeriesDiff:
    """One metric series of the original and the re-run, step by step: how many points each
    has, how many steps differ (a value not bit-equal, or a step only one has), the first such
    step and the largest absolute difference of the steps both have."""

    metric: str
    points: int
    rerun_points: int
    differing: int
    first_step: int | None
    max_abs: float | None

    @property
    def equal(self) -> bool:
        return self.differing == 0


@dataclass(frozen=True)
class VerifyReport:
    """``arch runs verify``: the re-run, every compared series, the metrics left out (they
    measure time) and the recorded settings beside the re-run's: ``(setting, then, now)``."""

    run: str
    rerun: str
    series: list[SeriesDiff]
    skipped: list[str]
    settings: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return all(s.equal for s in self.series)

    def differing_settings(self) -> list[tuple[str, str, str]]:
        return [row for row in self.settings if row[1] != row[2]]


def verify(
    run_id: str,
    registry: Registry,
    *,
    progress: Progress | None = None,
    threads: int | None = None,
) -> VerifyReport:
    """Re-run ``run_id`` (``rerun``) and compare: every metric series but those that measure
    time, exactly, and the settings each run recorded."""
    report = rerun(run_id, registry, progress=progress, threads=threads)
    original, again = registry.get(run_id), registry.get(report.runs[0])
    names = sorted(set(original.summaries) | set(again.summaries))
    series = [
        compare_series(
            name, _points(registry, original.id, name), _points(registry, again.id, name)
        )
        for name in names
        if not measures_time(name)
    ]
    skipped = [name for name in names if measures_time(name)]
    return VerifyReport(original.id, again.id, series, skipped, setting_rows(original, again))


def _points(registry: Registry, run_id: str, name: str) -> dict[int, float]:
    return {step: value for step, _epoch, value, _time in registry.metric_history(run_id, name)}


def compare_series(name: str, a: dict[int, float], b: dict[int, float]) -> SeriesDiff:
    """Series ``a`` (the original's, step -> value) against ``b`` (the re-run's), exactly: two
    values are equal when they are the same float (NaN equals NaN)."""
    steps = sorted(set(a) | set(b))
    bad = [s for s in steps if s not in a or s not in b or not _same(a[s], b[s])]
    gaps = [abs(a[s] - b[s]) for s in bad if s in a and s in b]
    finite = [g for g in gaps if not math.isnan(g)]
    worst = max(finite) if finite else (math.nan if gaps else None)
    return SeriesDiff(name, len(a), len(b), len(bad), bad[0] if bad else None, worst)


def _same(x: float, y: float) -> bool:
    return x == y or (math.isnan(x) and math.isnan(y))


def setting_rows(original: Run, again: Run) -> list[tuple[str, str, str]]:
    """What each run recorded about where and how it ran, as ``(setting, original, re-run)``
    texts: versions, installed packages, CPU threads, determinism settings, git commit and
    uncommitted changes, device and host ("not recorded" where the original lacks one)."""
    rows: list[tuple[str, str, str]] = []

    def add(name: str, then: Any, now: Any) -> None:
        rows.append((name, _text(then), _text(now)))

    a_prov, b_prov = original.provenance, again.provenance
    versions = sorted(set(a_prov.get("versions") or {}) | set(b_prov.get("versions") or {}))
    for name in versions:
        add(name, (a_prov.get("versions") or {}).get(name, _NOT), b_prov["versions"].get(name))
    then, now = _packages_changed(a_prov.get("packages"), b_prov.get("packages") or [])
    rows.append(("packages", then, now))
    for key in ("threads", "device", "device_name", "dtype"):
        add(key, original.config.get(key, _NOT), again.config.get(key))
    a_det, b_det = original.config.get("determinism") or {}, again.config.get("determinism") or {}
    for key in sorted(set(a_det) | set(b_det)):
        add(f"determinism.{key}", a_det.get(key, _NOT), b_det.get(key))
    for key in ("commit", "dirty", "diff_sha256"):
        add(f"git.{key}", _git_field(a_prov, key), _git_field(b_prov, key))
    add("host", a_prov.get("host", _NOT), b_prov.get("host"))
    return rows


_NOT = "not recorded"


def _git_field(prov: dict[str, Any], key: str) -> Any:
    """A field of a provenance's git state: "not a git tree" when it ran outside one."""
    if "git" not in prov:
        return _NOT
    git = prov["git"]
    return "not a git tree" if git is None else git.get(key)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _packages_changed(then: list[str] | None, now: list[str]) -> tuple[str, str]:
    """The installed packages of both runs as two texts: the same count when nothing changed,
    else each side's versions of the packages that differ (the first few)."""
    if then is None:
        return _NOT, f"{len(now)} packages"
    a = dict(p.split("==", 1) for p in then if "==" in p)
    b = dict(p.split("==", 1) for p in now if "==" in p)
    changed = sorted(n for n in set(a) | set(b) if a.get(n) != b.get(n))
    if not changed:
        return f"{len(then)} packages", f"{len(now)} packages"
    shown = changed[:6]
    more = f" (+{len(changed) - 6} more)" if len(changed) > 6 else ""
    return (
        ", ".join(f"{n}=={a.get(n, 'absent')}" for n in shown) + more,
        ", ".join(f"{n}=={b.get(n, 'absent')}" for n in shown) + more,
    )
