"""``arch train`` as a function: data, splits, one recorded run per fold, CV aggregates.

``train(spec, config, registry)`` loads the data the spec can take, splits it (a stratified
hold-out, or K folds, optionally repeated, with an optional test split), and trains one model per
fold with ``Trainer``, each inside a registry run that records the resolved configuration, the
split's fingerprints, the mixup setting, every epoch's metrics and the best checkpoint. Fold runs
of a K-fold split share a CV group, whose aggregates (mean, std, n, min, max) the registry keeps.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archlab.compiler.devices import device_name, resolve_device
from archlab.errors import UserInputError
from archlab.registry import Registry
from archlab.registry.provenance import working_tree_diff
from archlab.registry.records import CVGroup, Run
from archlab.runners import lifecycle
from archlab.runners.config import RESULT_NEUTRAL, TrainConfig
from archlab.runners.data import TaskData, load_data
from archlab.runners.distributed import Distributed, from_environment
from archlab.runners.init import InitPlan, read_weights, spec_init_plan, weights_file
from archlab.runners.lifecycle import interruptible, running
from archlab.runners.progress import TrainProgress
from archlab.runners.pruning import spec_has_dynamic
from archlab.runners.reproducibility import determinism_settings, keep_changes
from archlab.runners.splits import Fold, SplitPlan, make_splits
from archlab.runners.trainer import (
    STATE_FILE,
    FitResult,
    Trainer,
    check_monitor,
    load_state,
    uses_autocast,
)
from archlab.specs import load_spec
from archlab.specs.models import Spec


@dataclass
class TrainReport:
    """The runs ``train`` recorded, their results and, for K folds, the group's id."""

    spec: Spec
    data: TaskData
    plan: SplitPlan
    group: str | None
    runs: list[str] = field(default_factory=list)
    results: list[FitResult] = field(default_factory=list)
    config: TrainConfig | None = None
    init: InitPlan | None = None  # what --init loaded, and which tensors started fresh


Progress = TrainProgress  # the display train() and resume() report to (runners/progress.py)

#: The registry records epoch metrics at the epoch's number as the console shows it: the first
#: epoch is step 1 (runs recorded by archlab before this convention start at step 0).
EPOCH_BASE = 1


def train(
    spec_source: Any,
    config: TrainConfig,
    registry: Registry,
    *,
    progress: Progress | None = None,
) -> TrainReport:
    """Train ``spec_source`` under ``config``: one recorded run per fold. SIGINT and SIGTERM
    stop it with ``lifecycle.Interrupted`` (the run is recorded as interrupted)."""
    with interruptible():
        return _train(spec_source, config, registry, progress)


def _train(
    spec_source: Any, config: TrainConfig, registry: Registry, progress: Progress | None
) -> TrainReport:
    spec = load_spec(spec_source)
    lifecycle.check()  # a signal during a set-up step stops before the next one
    data = load_data(config.data, spec, seed=config.seed)
    lifecycle.check()
    check_monitor(config.early_stop_metric, data.task, dynamic=spec_has_dynamic(spec))
    plan = _split(data, config)
    if config.mixup_setting() is not None and data.task != "classify":
        raise UserInputError(
            f"mixup and CutMix mix class targets; {spec.name} is trained for {data.task} "
            "(next-token or sequence targets): drop --mixup / --cutmix"
        )
    setting = config.mixup_setting()
    cutmix = setting is not None and (setting.cutmix_alpha > 0 or setting.cutmix_minmax is not None)
    if cutmix and not any(i.kind == "image" for i in spec.inputs.values()):
        raise UserInputError(
            f"CutMix cuts boxes out of images, and {spec.name} takes no image input: use --mixup "
            "(which mixes the embeddings of token inputs) instead of --cutmix / --cutmix-minmax"
        )
    device = resolve_device(config.device)
    distributed = from_environment(device.type)
    main = distributed is None or distributed.main
    record = _record(config, data, device, distributed)
    plan_init = None
    if config.init is not None:  # checked before anything is recorded
        plan_init = _init_plan(spec, config.init, registry)
        record.update(init_sha256=plan_init.sha256, init_fresh=list(plan_init.fresh))
    group: CVGroup | None = None
    if plan.k is not None and main and config.cv_group is not None:
        group = registry.group(config.cv_group)
        _check_joinable(group, plan, data)
        _check_same_settings(group, record)
        _check_fold_open(registry, group, config.fold)
    teachers: dict[int, str] = {}  # fold index -> the dense teacher's run
    if spec_has_dynamic(spec) and (config.distill_weight > 0 or config.token_distill_weight > 0):
        teachers = _teachers(spec, config, registry, plan, data, distributed, progress)
        record["teacher"] = config.teacher or _teacher_label(registry, teachers)
    if plan.k is not None and main and group is None:
        group = registry.start_cv(
            spec,
            record,
            k=plan.k,
            splitter=plan.splitter,
            seed=plan.seed,
            shuffle=plan.shuffle,
            stratified=plan.stratified,
            grouped=plan.grouped,
            repeats=plan.repeats,
            library=plan.library,
        )
    report = TrainReport(
        spec, data, plan, group.id if group else None, config=config, init=plan_init
    )
    folds = plan.folds if config.fold is None else [plan.folds[config.fold]]
    _train_folds(registry, report, config, record, folds, group, teachers, progress, distributed)
    if distributed is not None:
        import torch.distributed as dist

        dist.barrier()  # rank 0 has recorded everything before any rank leaves
        dist.destroy_process_group()
    return report


def _record(
    config: TrainConfig, data: TaskData, device: torch.device, distributed: Distributed | None
) -> dict[str, Any]:
    """What every run of a training records as its configuration (a CV group too). A ``text:``
    source adds its vocabulary (``text_vocab``), which ``arch generate`` reads back."""
    vocab = {"text_vocab": data.text_vocab} if data.text_vocab is not None else {}
    return {
        **config.to_record(),
        "task": data.task,
        "data_sha256": data.content_sha256,
        "data_size": len(data),
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),  # CPU threads (runners/threads.py)
        "determinism": determinism_settings(),  # applied again by --rerun
        "dtype": "bfloat16 autocast" if uses_autocast(config.amp, device) else "float32",
        "optimizer": "AdamW",
        "schedule": "warmup_cosine",
        "world_size": distributed.world if distributed is not None else 1,
        **vocab,
    }


def _run_tags(config: TrainConfig) -> dict[str, str]:
    """The tags a run starts with: ``--tag k=v`` and ``--name N`` (as the tag ``name``)."""
    tags = dict(config.tags)
    if config.name is not None:
        tags["name"] = config.name
    return tags


def _train_folds(
    registry: Registry,
    report: TrainReport,
    config: TrainConfig,
    record: dict[str, Any],
    folds: list[Fold],
    group: CVGroup | None,
    teachers: dict[int, str],
    progress: Progress | None,
    distributed: Distributed | None = None,
) -> None:
    """Train ``folds`` one after another, each in a new run (of ``group``, if any), adding the
    runs and results to ``report``."""
    main = distributed is None or distributed.main
    spec, data, plan = report.spec, report.data, report.plan
    changes = working_tree_diff() if main else None  # kept with each run (--rerun, verify)
    for i, fold in enumerate(folds):
        seed = config.seed + fold.index if config.fold_seeds else config.seed
        teacher_run = teachers.get(fold.index)
        if not main:
            result = _fit_fold(
                None, registry, spec, data, config, plan, fold, seed, None,
                distributed=distributed, teacher_run=teacher_run,
            )  # fmt: skip
            report.results.append(result)
            continue
        fold_record = {**record, "init_seed": seed, "data_seed": fold_data_seed(config, fold)}
        if teacher_run is not None:
            fold_record["teacher_run"] = teacher_run
        with registry.start_run(
            spec,
            fold_record,
            cv_group=group,
            fold=fold.index if group is not None else None,
            train_indices=fold.train.tolist(),
            val_indices=fold.val.tolist(),
            mixup=config.mixup_setting(),
            tags=_run_tags(config),
        ) as run, running(run.id):  # fmt: skip
            keep_changes(run, registry, changes)
            result = _fit_fold(
                run, registry, spec, data, config, plan, fold, seed, progress,
                at=(i, len(folds)), distributed=distributed, teacher_run=teacher_run,
            )  # fmt: skip
        report.runs.append(run.id)
        report.results.append(result)


def resume(run_id: str, registry: Registry, *, progress: Progress | None = None) -> TrainReport:
    """Continue an interrupted (or failed) training run from the state its last finished epoch
    left, with the configuration, spec, data and split it recorded. On the CPU the resumed run
    ends with exactly the metrics an uninterrupted one would have.

    A fold of a K-fold training (``arch train --folds K``, not one ``--fold`` of it) continues
    the whole CV group: this fold, then the group's other unfinished folds (interrupted ones
    resumed, never started ones trained), so the group ends with all its folds."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserInputError("--resume runs in a single process: start it without torchrun")
    with interruptible():
        run = registry.get(run_id)
        config = _recorded_config(run.config)
        spec = load_spec(registry.spec_document(run.spec_hash))
        lifecycle.check()  # a signal during a set-up step stops before the next one
        data = load_data(config.data, spec, seed=config.seed)
        lifecycle.check()
        if run.config.get("data_sha256") not in (None, data.content_sha256):
            raise UserInputError(
                f"the data {config.data!r} changed since run {run_id} started (its content "
                "hash differs): resuming would train on other data"
            )
        plan = _split(data, config)
        group_id = run.cv.group if run.cv is not None else None
        report = TrainReport(spec, data, plan, group_id, config=config)
        whole_group = run.cv is not None and config.fold is None
        folds = [f for f in plan.folds if run.cv is not None and f.index != run.cv.fold]
        _resume_run(registry, report, run, config, progress, at=(0, 1 + len(folds)))
        if whole_group and run.cv is not None:
            _finish_group(registry, report, run, config, folds, progress)
    return report


def _resume_run(
    registry: Registry,
    report: TrainReport,
    run: Run,
    config: TrainConfig,
    progress: Progress | None,
    at: tuple[int, int] = (0, 1),
) -> None:
    """Continue one interrupted run from its training state (from its first epoch when it
    stopped before one ended)."""
    path = registry.run_file(run.id, STATE_FILE)
    state: dict[str, Any] | None = None
    if path.is_file():  # weights-only, and only inside the run's artifact folder
        state = load_state(registry.artifact_file(run, f"{run.id}/{STATE_FILE}"))
    elif "task" not in run.config:
        raise UserInputError(
            f"run {run.id} left no training state ({path}) and was not started by arch "
            "train; start it again instead"
        )
    # else: it stopped before its first epoch ended, so it trains from the start
    fold = report.plan.folds[run.cv.fold if run.cv is not None and run.cv.fold is not None else 0]
    seed = int(run.config.get("init_seed", config.seed))
    first = registry.metric_history(run.id, "train_loss")
    base = 0 if first and first[0][0] == 0 else 1  # runs of older archlab counted epochs from 0
    with registry.resume_run(run.id) as handle, running(run.id):
        result = _fit_fold(
            handle, registry, report.spec, report.data, config, report.plan, fold, seed,
            progress, resume=state, at=at, teacher_run=run.config.get("teacher_run"),
            epoch_base=base,
        )  # fmt: skip
    report.runs.append(run.id)
    report.results.append(result)


def _finish_group(
    registry: Registry,
    report: TrainReport,
    run: Run,
    config: TrainConfig,
    folds: list[Fold],
    progress: Progress | None,
) -> None:
    """After ``run`` resumed: the other folds of its group that did not complete, each resumed
    (an interrupted or failed run of that fold) or trained (a fold never started)."""
    assert run.cv is not None
    group = registry.group(run.cv.group)
    done = registry.completed_folds(group.id)
    unfinished: dict[int, Run] = {}
    for other in registry.compare([r for r in group.runs if r != run.id]):
        index = other.cv.fold if other.cv is not None else None
        if index is not None and index not in done and other.status in ("interrupted", "failed"):
            unfinished.setdefault(index, other)
    missing = [f for f in folds if f.index not in done and f.index not in unfinished]
    total = 1 + len(unfinished) + len(missing)
    for i, fold in enumerate(f for f in folds if f.index in unfinished):
        _resume_run(registry, report, unfinished[fold.index], config, progress, (1 + i, total))
    if not missing:
        return
    device = resolve_device(config.device)
    record = _record(config, report.data, device, None)
    teachers: dict[int, str] = {}
    if "teacher" in run.config and spec_has_dynamic(report.spec):
        teacher = config.model_copy(update={"teacher": run.config["teacher"], "fold": None})
        teachers = _teachers(
            report.spec, teacher, registry, report.plan, report.data, None, progress
        )
        record["teacher"] = run.config["teacher"]
    _train_folds(registry, report, config, record, missing, group, teachers, progress)


@dataclass(frozen=True)
class EvalReport:
    """An ``eval`` run: which run's checkpoint it evaluated, on what, and the metrics."""

    run: str
    evaluates: str
    data: TaskData
    examples: int
    metrics: dict[str, float]
    #: which form of the model ran: "frozen: ..." or "eager: <why not frozen>"
    inference: str = "eager"


@dataclass(frozen=True)
class RunModel:
    """A training run's best checkpoint loaded, the data to evaluate it on and which rows, and
    what an evaluation records about them (``record``: checkpoint, data, split, device)."""

    model: Any
    data: TaskData
    rows: np.ndarray
    config: TrainConfig
    record: dict[str, Any]


def run_model_and_data(
    run_id: str, registry: Registry, *, data_source: str | None = None, device: str | None = None
) -> RunModel:
    """Load the best checkpoint of training run ``run_id`` and the data an evaluation reads:
    every example of ``data_source``, or without one the run's own validation split
    (recomputed from its recorded configuration, and checked against its fingerprint).
    ``device``: load there rather than on the device the run's configuration names."""
    from archlab.compiler import load_compiled

    run = registry.get(run_id)
    checkpoints = [a for a in run.artifacts if a.kind == "checkpoint"]
    if not checkpoints:
        raise UserInputError(f"run {run_id} has no checkpoint artifact to evaluate")
    path = registry.artifact_file(run, checkpoints[-1].path)
    config = _recorded_config(run.config)
    if device is not None:
        config = config.model_copy(update={"device": device})
    resolved = resolve_device(config.device)
    model = load_compiled(path, device=resolved)
    data = load_data(data_source or config.data, model.spec, seed=config.seed)
    if data_source is None:
        rows = validation_rows(run, data, config, "evaluate on")
    else:
        rows = np.arange(len(data), dtype=np.int64)
    record = {
        "evaluates": run_id,
        "checkpoint": checkpoints[-1].path,
        "checkpoint_sha256": checkpoints[-1].sha256,
        "data": data.source,
        "data_sha256": data.content_sha256,
        "examples": len(rows),
        "split": "validation of the evaluated run" if data_source is None else "all",
        "device": str(resolved),
        "threads": torch.get_num_threads(),
    }
    return RunModel(model, data, rows, config, record)


def evaluate_run(
    run_id: str,
    registry: Registry,
    *,
    data_source: str | None = None,
    device: str | None = None,
    freeze: bool = True,
) -> EvalReport:
    """Evaluate the best checkpoint of training run ``run_id`` and record it as an ``eval`` run.

    With ``data_source``, on every example of that data; without, on the run's own validation
    split (recomputed from its recorded configuration, and checked against its fingerprint).
    Metrics are named ``eval_loss`` and ``eval_acc`` / ``eval_ppl`` / ``eval_token_acc``.
    ``device``: evaluate there rather than on the device the run's configuration names.
    ``freeze``: run the model frozen (``CompiledModel.freeze``) where that computes what
    training's evaluation computed, to float32 rounding: on the CPU, in float32, without
    autocast. The record's ``inference`` says which form ran, and why."""
    loaded = run_model_and_data(run_id, registry, data_source=data_source, device=device)
    config, data, spec = loaded.config, loaded.data, loaded.model.spec
    trainer = Trainer(spec, data, config, init_seed=config.seed, data_seed=config.seed)
    inference = (
        _freeze_for_evaluation(loaded.model, trainer.amp) if freeze else "eager: --no-freeze"
    )
    started = time.time()
    metrics = trainer.evaluate(loaded.model, loaded.rows, prefix="eval")
    record = {**loaded.record, "device": str(trainer.device), "inference": inference}
    with registry.start_run(
        spec, record, kind="eval", tags={"evaluates": run_id}, started=started
    ) as handle:
        handle.log_metrics(metrics, step=0)
    return EvalReport(handle.id, run_id, data, len(loaded.rows), metrics, inference)


def _freeze_for_evaluation(model: Any, amp: bool) -> str:
    """Freeze ``model`` when its frozen outputs equal its eager ones to float32 rounding (the
    CPU, float32 weights, no autocast: packed oneDNN linears); what ran, in words."""
    first = next(iter(model.parameters()), None)
    if first is None or first.device.type != "cpu":
        return "eager: frozen models on CUDA run in bfloat16, unlike training's evaluation"
    if first.dtype != torch.float32 or amp:
        return "eager: packed linears are float32 without autocast"
    report = model.freeze().frozen
    if not report.packed:
        reasons = "; ".join(report.unpacked) or "no linear layer"
        return f"eager: nothing to pack ({reasons})"
    return f"frozen: {report.packed} linears packed for oneDNN, {report.fused} fused"


def validation_rows(run: Run, data: TaskData, config: TrainConfig, purpose: str) -> np.ndarray:
    """Run ``run``'s validation indices, rebuilt from its recorded configuration and checked
    against the fingerprint it recorded; ``purpose`` ends the advice ("evaluate on", ...)."""
    return fold_rows(run, data, config, purpose)[1]


def fold_rows(
    run: Run, data: TaskData, config: TrainConfig, purpose: str
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``run``'s (training, validation) indices, rebuilt from its recorded configuration
    and checked against the fingerprints it recorded (``validation_rows``)."""
    from archlab.registry import indices_sha256

    fold = _split(data, config).folds[run.cv.fold if run.cv and run.cv.fold else 0]
    recorded = run.cv.val_sha256 if run.cv is not None else None
    if recorded is not None and recorded != indices_sha256(fold.val.tolist()):
        raise UserInputError(
            f"run {run.id}'s validation split cannot be rebuilt (the data or splitter changed); "
            f"pass --data to {purpose} a data set of your choice"
        )
    return np.asarray(fold.train), np.asarray(fold.val)


def _fit_fold(
    run: Any,
    registry: Registry,
    spec: Spec,
    data: TaskData,
    config: TrainConfig,
    plan: SplitPlan,
    fold: Fold,
    seed: int,
    progress: Progress | None,
    resume: dict[str, Any] | None = None,
    at: tuple[int, int] = (0, 1),
    distributed: Distributed | None = None,
    teacher_run: str | None = None,
    epoch_base: int = EPOCH_BASE,
    data_seed: int | None = None,
) -> FitResult:
    """Train one fold inside its registry run: metrics every epoch, then test metrics, the best
    checkpoint as an artifact and the best epoch as a tag. ``at``: (position, count) of this
    fold among the folds the caller trains, for ``progress``. Epochs are recorded as the
    console counts them, from ``epoch_base`` (1; 0 for a resumed run of an older archlab).
    ``data_seed``: the data order's seed (default: ``fold_data_seed``'s, as recorded)."""

    def log(epoch: int, metrics: dict[str, float]) -> None:
        run.log_metrics(metrics, step=epoch + epoch_base, epoch=epoch + epoch_base)
        # committed before the epoch's training state is written: a run killed after that
        # state never resumes past metrics the registry lost
        run.flush()
        if progress is not None:
            progress.epoch(epoch, metrics)

    main = distributed is None or distributed.main
    teacher = (
        _load_teacher(registry, teacher_run, resolve_device(config.device)) if teacher_run else None
    )
    init = None
    if config.init is not None and resume is None:
        weights, sha256 = read_weights(weights_file(config.init, registry))
        init = (weights, spec_init_plan(spec, weights, config.init, sha256))
    trainer = Trainer(
        spec,
        data,
        config,
        init_seed=seed,
        data_seed=fold_data_seed(config, fold) if data_seed is None else data_seed,
        out_dir=registry.run_folder(run.id) if main else None,
        log=log if main else None,
        progress=progress if main else None,
        distributed=distributed,
        teacher=teacher,
        teacher_name=_teacher_name(teacher_run),
        # the best epoch is chosen the way the registry chooses the run's best value
        monitor_direction=registry.metric_direction(config.early_stop_metric or "val_loss"),
        init=init,
    )
    if not main:  # another rank of a torchrun job: rank 0 records everything
        return trainer.fit(fold.train, fold.val, plan.test)
    if progress is not None:
        world = distributed.world if distributed is not None else 1
        batches = math.ceil(len(fold.train) // world / config.batch_size)  # this rank's share
        progress.start_fold(*at, run.id, config.epochs, batches)
    result = trainer.fit(fold.train, fold.val, plan.test, resume=resume)
    if result.test:
        run.log_metrics(result.test, step=result.epochs_run - 1 + epoch_base)
    if result.checkpoint is not None and result.checkpoint.exists():
        run.log_artifact(result.checkpoint, "checkpoint")
    state = registry.run_file(run.id, STATE_FILE)
    if state.exists():  # what --resume needs; kept with the run like the checkpoint
        run.log_artifact(state, "training-state")
    run.tag(best_epoch=result.best_epoch + epoch_base, stopped_early=result.stopped_early)
    if progress is not None:
        progress.end_fold(result.best_epoch, result.best, by=trainer.monitor)
    return result


# the settings a teacher's split depends on: they must match the student's
_SPLIT_KEYS = ("data_sha256", "folds", "repeats", "cv_seed", "val_size", "test_size")


def _teachers(
    spec: Spec,
    config: TrainConfig,
    registry: Registry,
    plan: SplitPlan,
    data: TaskData,
    distributed: Distributed | None,
    progress: Progress | None,
) -> dict[int, str]:
    """The dense teacher run of each fold: from ``config.teacher``, or trained here first."""
    from archlab.registry import RegistryError, indices_sha256
    from archlab.runners.pruning import dense_spec

    if config.teacher is not None and Path(config.teacher).is_file():
        # pretrained weights (arch import, arch compile -o): they never saw this split
        folds = plan.folds if config.fold is None else [plan.folds[config.fold]]
        return {f.index: config.teacher for f in folds}
    if config.teacher is None:
        if distributed is not None:
            raise UserInputError(
                "under torchrun, train the dense teacher first and pass --teacher RUN (or leave "
                "distillation off with --distill-weight 0 --token-distill-weight 0)"
            )
        dense = dense_spec(spec)
        first = train(
            dense, config.model_copy(update={"cv_group": None}), registry, progress=progress
        )
        folds = plan.folds if config.fold is None else [plan.folds[config.fold]]
        return {f.index: run for f, run in zip(folds, first.runs, strict=True)}
    try:
        group = registry.group(config.teacher)
    except RegistryError:
        group = None
    if group is not None:
        _check_joinable(group, plan, data)  # a teacher group split otherwise would leak
        by_fold = {}
        for run_id in group.runs:
            run = registry.get(run_id)
            if run.cv is not None and run.cv.fold is not None and run.status == "completed":
                by_fold[run.cv.fold] = run_id
        wanted = [f.index for f in plan.folds] if config.fold is None else [config.fold]
        missing = [i for i in wanted if i not in by_fold]
        if missing:
            raise UserInputError(
                f"teacher CV group {group.id} has no completed run for fold(s) "
                f"{', '.join(map(str, missing))}; finish them (arch train --cv-group) first"
            )
        runs = {i: by_fold[i] for i in wanted}
    else:
        try:
            registry.get(config.teacher)
        except RegistryError:
            raise UserInputError(
                f"--teacher {config.teacher}: no run or CV group with that id in this registry"
            ) from None
        if plan.k is not None and config.fold is None:
            raise UserInputError(
                f"--teacher {config.teacher} is one run, but the student trains {len(plan.folds)} "
                "folds: pass the teacher's CV group, so each fold learns from the teacher that "
                "never saw its validation examples"
            )
        runs = {(config.fold or 0): config.teacher}
    for index, run_id in runs.items():
        run = registry.get(run_id)
        differ = [
            f"{key} {run.config.get(key)!r} (teacher) vs {ours!r} (here)"
            for key in _SPLIT_KEYS
            if (ours := {**config.to_record(), "data_sha256": data.content_sha256}.get(key))
            != run.config.get(key)
        ]
        val = plan.folds[index].val
        if run.cv is not None and run.cv.val_sha256 not in (None, indices_sha256(val.tolist())):
            differ.append("its validation examples")
        if differ:
            raise UserInputError(
                f"teacher run {run_id} was trained on another split ({'; '.join(differ)}): its "
                "knowledge of the student's validation examples would leak into the student; "
                "train the teacher with the same --data, --folds, --repeats, --cv-seed, "
                "--val-size and --test-size"
            )
        if not any(a.kind == "checkpoint" for a in run.artifacts):
            raise UserInputError(f"teacher run {run_id} has no checkpoint artifact")
    return runs


def _teacher_label(registry: Registry, teachers: dict[int, str]) -> str:
    """The teachers' CV group when they form one, else the single teacher run."""
    first = registry.get(next(iter(teachers.values())))
    return first.cv.group if first.cv is not None and len(teachers) > 1 else first.id


def _init_plan(spec: Spec, source: str, registry: Registry) -> InitPlan:
    """What ``--init source`` loads into the spec's model (checked on the meta device)."""
    weights, sha256 = read_weights(weights_file(source, registry))
    return spec_init_plan(spec, weights, source, sha256)


def _teacher_name(teacher: str | None) -> str:
    """A teacher for messages: ``run ID``, or the weights file's path."""
    if teacher is None:
        return ""
    return teacher if Path(teacher).is_file() else f"run {teacher}"


def _load_teacher(registry: Registry, run_id: str, device: torch.device) -> Any:
    """The teacher a run (its last checkpoint) or a weights file (``--teacher FILE``) holds."""
    from archlab.compiler import load_compiled

    if Path(run_id).is_file():
        return load_compiled(run_id, device=device)

    run = registry.get(run_id)
    checkpoints = [a for a in run.artifacts if a.kind == "checkpoint"]
    if not checkpoints:
        raise UserInputError(f"teacher run {run_id} has no checkpoint artifact")
    return load_compiled(registry.artifact_file(run, checkpoints[-1].path), device=device)


def fold_data_seed(config: TrainConfig, fold: Fold) -> int:
    """The seed of a fold's data order (and, plus one, of its mixup draws)."""
    return config.seed * 1_000_003 + fold.index


def _recorded_config(record: dict[str, Any]) -> TrainConfig:
    """The training configuration a run recorded (its record adds task, data hash, device...)."""
    return TrainConfig(**{k: v for k, v in record.items() if k in TrainConfig.model_fields})


def _split(data: TaskData, config: TrainConfig) -> SplitPlan:
    """The configuration's split of the data (the same one every time: seeded)."""
    return make_splits(
        len(data),
        folds=config.folds,
        repeats=config.repeats,
        seed=config.cv_seed,
        val_size=config.val_size,
        test_size=config.test_size,
        labels=data.stratify_labels,
        groups=data.groups,
    )


def _check_joinable(group: CVGroup, plan: SplitPlan, data: TaskData) -> None:
    """A fold run joining an existing group must split the same data the same way, or its fold
    would not be one of the group's folds."""
    ours = {"k": plan.k, "repeats": plan.repeats, "seed": plan.seed, "splitter": plan.splitter}
    theirs = {
        "k": group.k,
        "repeats": group.repeats,
        "seed": group.seed,
        "splitter": group.splitter,
    }
    differ = [
        f"{key} {theirs[key]} (group) vs {ours[key]} (here)"
        for key in ours
        if ours[key] != theirs[key]
    ]
    recorded = group.config.get("data_sha256")
    if recorded is not None and recorded != data.content_sha256:
        differ.append("the data's content hash")
    if differ:
        raise UserInputError(
            f"CV group {group.id} was split differently: {'; '.join(differ)}; pass the same "
            "--data, --folds, --repeats and --cv-seed as the run that created it"
        )


def _check_same_settings(group: CVGroup, record: dict[str, Any]) -> None:
    """A fold joining a group must be trained as the group's other folds were: every recorded
    setting but those that cannot change results (``RESULT_NEUTRAL``) must match, or the group
    would average models trained differently."""
    recorded = group.config
    differ = [
        f"{key} {_shown(recorded.get(key))} -> {_shown(record.get(key))}"
        for key in sorted(set(recorded) | set(record))
        if key not in RESULT_NEUTRAL and key != "teacher" and recorded.get(key) != record.get(key)
    ]
    if differ:
        raise UserInputError(
            f"CV group {group.id} was trained with other settings (group -> here): "
            f"{'; '.join(differ)}. Its folds are averaged, so each must be trained the same "
            "way: pass the group's settings (arch runs show on one of its runs lists them), or "
            "start a new group. Only these may differ: " + ", ".join(sorted(RESULT_NEUTRAL))
        )


def _shown(value: Any) -> str:
    return "(unset)" if value is None else repr(value)


def _check_fold_open(registry: Registry, group: CVGroup, fold: int | None) -> None:
    """A fold index joins a group once: a second completed run of it would be counted twice."""
    done = registry.completed_folds(group.id)
    if fold is not None and fold in done:
        todo = [i for i in range(group.k * group.repeats) if i not in done]
        left = f"folds still to train: {', '.join(map(str, todo))}" if todo else "it is complete"
        raise UserInputError(
            f"fold {fold} of CV group {group.id} is already completed (run {done[fold]}); "
            f"{left}. Train another --fold, or start a new group without --cv-group"
        )
