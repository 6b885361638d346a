"""``arch sweep`` as functions: Optuna samples variants of a spec, each trial a recorded CV group.

``run_sweep(sweep, registry)`` joins (or starts) the study named by the sweep and runs trials
until the study holds exactly ``trials`` finished ones (completed, pruned or rejected), however
many processes share it. A trial applies the sampled point to the base spec and training settings
(``sweep_file``), rejects in milliseconds a variant that is invalid or over budget (its reason in
the trial's ``rejected`` attribute, never trained), else trains it fold by fold with
``runners.train.train``: the fold runs form one CV group tagged ``sweep`` (the study) and
``trial`` (its number). After each fold the running mean of a single objective goes to the pruner,
which may stop a trial that cannot win.

Optuna's storage sits beside the registry, never in its tables (both keep an ``alembic_version``):
a file ``<registry>.optuna.db`` next to a SQLite registry, the schema ``optuna`` of a PostgreSQL
one. With a heartbeat, a trial whose worker died (SIGKILL, a lost machine) is marked failed by the
next worker that looks, and retried with the same parameters.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from archlab.errors import UserInputError
from archlab.registry import Registry
from archlab.registry.engine import sqlite_path
from archlab.runners.sweep_file import SPEC_OBJECTIVES, Budget, Range, Sweep, Variant, check_budget
from archlab.specs import load_spec

if TYPE_CHECKING:
    import optuna

#: Optuna's tables live in this schema of a PostgreSQL registry's database.
PG_SCHEMA = "optuna"
#: Seconds between a running trial's heartbeats; a trial silent for GRACE_BEATS of them is dead.
HEARTBEAT_S = 10.0
GRACE_BEATS = 3
_NO_BUDGET = Budget()
#: A dead worker's trial is retried this many times.
MAX_RETRY = 3


class _SurplusError(Exception):
    """A trial started by a worker that raced another for the last slot: it is not run."""


@dataclass(frozen=True)
class TrialRow:
    """One trial as ``arch sweep show`` lists it."""

    number: int
    state: str  # COMPLETE, PRUNED, REJECTED, RUNNING, FAIL, WAITING
    params: dict[str, Any]
    values: list[float] | None
    group: str | None = None
    reason: str | None = None  # why it was rejected, pruned or failed
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "params": self.params,
            "values": self.values,
            "group": self.group,
            "reason": self.reason,
            "params_count": self.attrs.get("params"),
            "flops": self.attrs.get("flops"),
        }


def optuna_module() -> Any:
    """``optuna``, or a ``UserInputError`` naming the extra that installs it."""
    try:
        import optuna
    except ImportError:
        raise UserInputError(
            "arch sweep needs Optuna (>= 5): pip install 'archlab[sweep]'"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats and stale-trial retries are "experimental" in Optuna 5, and archlab relies on them
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def storage(
    registry_url: str, heartbeat: float | None = HEARTBEAT_S, *, retry: bool = True
) -> optuna.storages.RDBStorage:
    """Optuna's storage beside the registry at ``registry_url``: ``<file>.optuna.db`` next to a
    SQLite registry, the schema ``optuna`` (created when missing) of a PostgreSQL one."""
    optuna_module()
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    path = sqlite_path(registry_url)
    kwargs: dict[str, Any] = {}
    if path is not None:
        url = f"sqlite:///{path}.optuna.db"
        kwargs["connect_args"] = {"timeout": 30.0}
    else:
        parsed = make_url(registry_url)
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        url = parsed.render_as_string(hide_password=False)
        _create_schema(url)
        kwargs["connect_args"] = {"options": f"-csearch_path={PG_SCHEMA}"}
    beat: dict[str, Any] = {}
    if heartbeat is not None:
        beat = {
            "heartbeat_interval": max(1, round(heartbeat)),
            "grace_period": max(2, round(heartbeat * GRACE_BEATS)),
        }
        if retry:
            beat["heartbeat_stale_trial_callback"] = RetryHeartbeatStaleTrialCallback(MAX_RETRY)
    return RDBStorage(url, engine_kwargs=kwargs, **beat)


def _create_schema(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}"))
    finally:
        engine.dispose()


def open_study(sweep: Sweep, store: Any, name: str) -> Any:
    """The study ``name`` in Optuna's storage ``store`` (created, or joined: another worker's)."""
    optuna = optuna_module()
    objectives = sweep.model.objectives
    directions = ["maximize" if d == "max" else "minimize" for d in objectives.values()]
    try:
        existing = len(optuna.load_study(study_name=name, storage=store).trials)
    except KeyError:
        existing = 0
    # reproducible alone; a worker joining later samples from its own stream
    sampler = optuna.samplers.TPESampler(seed=sweep.model.seed + existing, n_startup_trials=2)
    pruning = sweep.model.pruner or ("median" if len(objectives) == 1 else "none")
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
        if pruning == "median"
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=name,
        storage=store,
        sampler=sampler,
        pruner=pruner,
        directions=directions,
        load_if_exists=True,
    )
    if list(study.user_attrs.get("objectives", objectives)) != list(objectives):
        raise UserInputError(
            f"study {name!r} optimises {study.user_attrs['objectives']}, not {objectives}: "
            "name another study (--study)"
        )
    study.set_user_attr("objectives", dict(objectives))
    return study


@dataclass
class SweepReport:
    """What one worker did: the study, the trials it ran, and the study's trials at the end."""

    study: str
    ran: list[int] = field(default_factory=list)
    trials: list[TrialRow] = field(default_factory=list)


def run_sweep(
    sweep: Sweep,
    registry: Registry,
    *,
    trials: int | None = None,
    study_name: str | None = None,
    heartbeat: float | None = HEARTBEAT_S,
    on_trial: Callable[[TrialRow], None] | None = None,
) -> SweepReport:
    """Run trials of ``sweep`` until its study holds ``trials`` (default: the file's) finished
    ones; other processes may run the same study at the same time."""
    name = study_name or sweep.name
    target = trials if trials is not None else sweep.model.trials
    store = storage(registry.url, heartbeat)
    try:
        study = open_study(sweep, store, name)
        return _run_study(sweep, registry, study, target, heartbeat, on_trial)
    finally:
        close_storage(store)


def _run_study(
    sweep: Sweep,
    registry: Registry,
    study: Any,
    target: int,
    heartbeat: float | None,
    on_trial: Callable[[TrialRow], None] | None,
) -> SweepReport:
    """Run trials of ``study`` until it holds ``target`` finished ones."""
    optuna = optuna_module()
    from optuna.trial import TrialState

    name = study.study_name
    report = SweepReport(name)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)

    def objective(trial: Any) -> float | list[float]:
        live = study.get_trials(deepcopy=False, states=(*finished, TrialState.RUNNING))
        if sorted(t.number for t in live).index(trial.number) >= target:
            trial.set_user_attr("surplus", True)
            raise _SurplusError(f"the study already has {target} trials")
        report.ran.append(trial.number)
        return run_trial(sweep, registry, trial, name)

    while True:
        optuna.storages.fail_stale_trials(study)
        states = [t.state for t in study.get_trials(deepcopy=False)]
        done = sum(s in finished for s in states)
        if done >= target:
            break
        if done + states.count(TrialState.RUNNING) >= target and TrialState.WAITING not in states:
            time.sleep(min(heartbeat or 1.0, 5.0))  # the last ones run elsewhere, or died
            continue
        before = len(states)
        study.optimize(objective, n_trials=1, catch=(_SurplusError,))
        if on_trial is not None:
            for t in study.get_trials(deepcopy=False)[before:]:
                if t.number in report.ran and t.state != TrialState.RUNNING:
                    on_trial(trial_row(t))
    report.trials = [trial_row(t) for t in study.get_trials(deepcopy=False)]
    return report


def suggest(trial: Any, name: str, rng: Range) -> Any:
    """The trial's value of one dimension of the space."""
    kind = rng.kind
    if kind == "choice":
        return trial.suggest_categorical(name, rng.choice)
    low, high = rng.bounds(kind)
    if kind == "int":
        return trial.suggest_int(name, low, high, step=int(rng.step or 1))
    return trial.suggest_float(name, low, high, log=kind == "log", step=rng.step)


def run_trial(sweep: Sweep, registry: Registry, trial: Any, study: str) -> float | list[float]:
    """One trial: sample, reject (``optuna.TrialPruned`` with the reason) or train fold by fold,
    and return the objectives' values."""
    optuna = optuna_module()
    point = {name: suggest(trial, name, rng) for name, rng in sweep.model.space.items()}
    started = time.perf_counter()
    try:
        variant = sweep.variant(point)
        spec = load_spec(variant.spec)
        params, flops, reason = check_budget(spec, sweep.model.budget)
        trial.set_user_attr("params", params)
        trial.set_user_attr("flops", flops)
        tags = {"sweep": study, "trial": str(trial.number)}
        sweep.config(variant, tags)  # the training settings are checked before anything runs
    except UserInputError as exc:
        reason = str(exc)
    if reason is not None:
        trial.set_user_attr("rejected", reason)
        trial.set_user_attr("rejected_ms", round((time.perf_counter() - started) * 1000, 3))
        raise optuna.TrialPruned(f"rejected: {reason}")
    same = _same_point(trial, point)
    if same is not None:  # TPE repeats points of a small space: the result is already known
        trial.set_user_attr("same_as", same.number)
        trial.set_user_attr("group", same.user_attrs.get("group"))
        return same.values[0] if len(same.values) == 1 else list(same.values)
    spec_values = {"params": float(params), "flops": float(flops)}
    return _train_trial(sweep, registry, trial, variant, tags, spec_values)


def _same_point(trial: Any, point: dict[str, Any]) -> Any:
    """An earlier completed trial of the same study at exactly ``point``, or None."""
    from optuna.trial import TrialState

    done = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return next((t for t in done if t.params == point and t.number != trial.number), None)


def _train_trial(
    sweep: Sweep,
    registry: Registry,
    trial: Any,
    variant: Variant,
    tags: dict[str, str],
    spec_values: dict[str, float],
) -> float | list[float]:
    """Train the variant fold by fold in one CV group; report the running mean of a single
    objective after each fold (the pruner may stop the trial there)."""
    optuna = optuna_module()
    from archlab.runners.config import TrainConfig
    from archlab.runners.train import train

    objectives = sweep.model.objectives
    single = len(objectives) == 1
    base = {**variant.train, "tags": tags, "name": f"{tags['sweep']}#{tags['trial']}"}
    folds = int(base["folds"]) * int(base.get("repeats", 1))
    group: str | None = None
    finals: list[dict[str, float]] = []
    for fold in range(folds):
        at = {"fold": fold} if group is None else {"fold": fold, "cv_group": group}
        config = TrainConfig.model_validate({**base, **at})
        report = train(variant.spec, config, registry)
        if group is None:
            group = report.group
            trial.set_user_attr("group", group)
        finals.append(report.results[0].final)
        values = _values(objectives, finals, spec_values)
        if single and fold < folds - 1:
            trial.report(values[0], fold)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {fold}: {values[0]:.4g}")
    values = _values(objectives, finals, spec_values)
    return values[0] if single else values


def _values(
    objectives: Mapping[str, str], finals: list[dict[str, float]], spec_values: dict[str, float]
) -> list[float]:
    """Each objective: a spec count, or the mean over the folds so far of a final metric."""
    out = []
    for name in objectives:
        if name in SPEC_OBJECTIVES:
            out.append(spec_values[name])
            continue
        missing = [i for i, f in enumerate(finals) if name not in f]
        if missing:
            known = ", ".join(sorted(finals[missing[0]])) or "none"
            raise UserInputError(
                f"objective {name!r} is not a metric the training records (it records {known}, "
                "and the spec's params and flops)"
            )
        out.append(sum(f[name] for f in finals) / len(finals))
    return out


def trial_row(trial: Any) -> TrialRow:
    """A trial of Optuna's as a row: a pruned trial with a ``rejected`` reason is REJECTED."""
    attrs = dict(trial.user_attrs)
    state = trial.state.name
    reason = None
    if "rejected" in attrs:
        state, reason = "REJECTED", attrs["rejected"]
    elif state == "PRUNED":
        steps = sorted(trial.intermediate_values)
        reason = f"pruned after fold {steps[-1]}" if steps else "pruned"
    elif "same_as" in attrs:
        reason = f"same point as trial {attrs['same_as']}: its result, not trained again"
    elif state == "FAIL":
        reason = "surplus: raced another worker" if attrs.get("surplus") else "failed or died"
    return TrialRow(
        trial.number,
        state,
        dict(trial.params),
        list(trial.values) if trial.values is not None else None,
        attrs.get("group"),
        reason,
        attrs,
    )


def sweep_trials(registry: Registry, study: str) -> tuple[dict[str, str], list[TrialRow]]:
    """The objectives and every trial of ``study`` (``arch sweep show``)."""
    optuna = optuna_module()
    store = storage(registry.url, None)
    try:
        loaded = optuna.load_study(study_name=study, storage=store)
        return dict(loaded.user_attrs.get("objectives", {})), [trial_row(t) for t in loaded.trials]
    except KeyError:
        raise UserInputError(f"no sweep named {study!r} beside {registry.url}") from None
    finally:
        close_storage(store)


def close_storage(store: Any) -> None:
    """Close an ``RDBStorage``'s connections (its engine is otherwise left to the collector)."""
    store.remove_session()
    store.engine.dispose()


@dataclass(frozen=True)
class FrontPoint:
    """A trial's CV group with its objectives' values, and whether it is on the Pareto front."""

    trial: str
    group: str
    values: dict[str, float]
    front: bool


def pareto_front(registry: Registry, study: str, objectives: dict[str, str]) -> list[FrontPoint]:
    """Every complete CV group the registry holds for ``study`` (fold runs tagged ``sweep``),
    with the mean over folds of each objective's final value (``params`` and ``flops`` from its
    spec), marked when no other group is at least as good in every objective and better in one.
    Sorted: the front first, then by the first objective."""
    groups: dict[str, list[Any]] = {}
    quoted = study.replace("\\", "\\\\").replace("'", "\\'")
    for run in registry.runs(where=f"tags.sweep == '{quoted}' and status == 'completed'"):
        if run.cv is not None:
            groups.setdefault(run.cv.group, []).append(run)
    points = []
    for group_id, runs in groups.items():
        group = registry.group(group_id)
        if len({r.cv.fold for r in runs if r.cv is not None}) < group.k * group.repeats:
            continue  # pruned or unfinished
        spec = load_spec(registry.spec_document(runs[0].spec_hash))
        params, flops, _ = check_budget(spec, _NO_BUDGET)
        values = {}
        for name in objectives:
            if name in SPEC_OBJECTIVES:
                values[name] = float(params if name == "params" else flops)
            elif all(name in r.metrics for r in runs):
                values[name] = sum(r.metrics[name] for r in runs) / len(runs)
        if len(values) == len(objectives):
            points.append((runs[0].tags.get("trial", "?"), group_id, values))
    sign = {n: (1.0 if d == "max" else -1.0) for n, d in objectives.items()}

    def dominates(a: dict[str, float], b: dict[str, float]) -> bool:
        ge = all(sign[n] * a[n] >= sign[n] * b[n] for n in objectives)
        return ge and any(sign[n] * a[n] > sign[n] * b[n] for n in objectives)

    out = [FrontPoint(t, g, v, not any(dominates(o[2], v) for o in points)) for t, g, v in points]
    first = next(iter(objectives))
    return sorted(out, key=lambda p: (not p.front, -sign[first] * p.values[first]))


__all__ = [
    "PG_SCHEMA",
    "FrontPoint",
    "SweepReport",
    "TrialRow",
    "open_study",
    "optuna_module",
    "pareto_front",
    "run_sweep",
    "run_trial",
    "storage",
    "sweep_trials",
]
