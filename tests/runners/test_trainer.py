"""The pieces of one fit, each alone: set-up, one epoch, evaluation, keeping the best epoch and
its checkpoint, early stopping's patience, and the resume state (what ``state.pt`` holds, saved
and restored)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from archlab.metrics import default_direction
from archlab.runners.config import TrainConfig
from archlab.runners.data import load_data
from archlab.runners.trainer import (
    STATE_FILE,
    FitParts,
    Standing,
    StateError,
    Trainer,
    evaluation_metrics,
    load_state,
    restore_state,
    save_state,
    training_state,
    write_checkpoint,
)
from archlab.specs import load_spec

ROOT = Path(__file__).resolve().parents[2]
VIT = ROOT / "specs" / "vit-tiny-digits.json"
INDICES = np.arange(60)


def config(**changes: Any) -> TrainConfig:
    base: dict[str, Any] = {"epochs": 3, "warmup": 0.5, "batch_size": 16, "lr": 2e-3}
    return TrainConfig(**{**base, **changes})


@pytest.fixture
def trainer(random_images: Callable[[int, int], str], tmp_path: Path) -> Callable[..., Trainer]:
    spec = load_spec(VIT)
    data = load_data(random_images(60, 3), spec)

    def make(out_dir: Path | None = None, **changes: Any) -> Trainer:
        cfg = config(**changes)
        return Trainer(spec, data, cfg, init_seed=1, data_seed=2, out_dir=out_dir)

    return make


def weights(parts: FitParts) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in parts.model.state_dict().items()}


def test_setup_builds_a_seeded_model_optimizer_and_schedule(
    trainer: Callable[..., Trainer],
) -> None:
    first, second = trainer().setup(INDICES), trainer().setup(INDICES)
    assert first.batches == 4  # 60 examples in batches of 16
    assert first.step_model is first.model  # neither distributed nor compiled
    assert first.distiller is None and first.mixer is None and first.hooks == []
    for name, value in weights(first).items():
        assert torch.equal(value, weights(second)[name])
    assert torch.equal(first.order.get_state(), second.order.get_state())


def test_one_epoch_moves_the_weights_and_reports_the_training_loss(
    trainer: Callable[..., Trainer],
) -> None:
    fit = trainer()
    parts = fit.setup(INDICES)
    before = weights(parts)
    trained, seen = fit.train_epoch(parts, INDICES, 0)
    assert seen == 60
    assert list(trained) == ["train_loss"] and trained["train_loss"] > 0
    after = weights(parts)
    assert any(not torch.equal(before[name], after[name]) for name in before)
    assert parts.schedule.last_epoch == 4  # one optimizer step per batch


def test_an_epochs_metrics_are_those_it_logs_in_order(trainer: Callable[..., Trainer]) -> None:
    fit = trainer()
    metrics = fit.run_epoch(fit.setup(INDICES), INDICES[:40], INDICES[40:], 0)
    assert list(metrics) == ["train_loss", "val_loss", "val_acc", "lr", "samples_per_s"]


@pytest.mark.parametrize(
    ("task", "names"),
    [("classify", ("test_loss", "test_acc")), ("lm", ("test_loss", "test_ppl"))],
)
def test_evaluation_names_its_metrics_and_their_directions(
    task: str, names: tuple[str, str]
) -> None:
    assert evaluation_metrics(task, "test") == names
    assert [default_direction(name) for name in names] == (
        ["min", "max"] if task == "classify" else ["min", "min"]
    )


def test_evaluate_returns_loss_and_accuracy_without_changing_the_mode(
    trainer: Callable[..., Trainer],
) -> None:
    fit = trainer()
    parts = fit.setup(INDICES)
    parts.model.train()
    result = fit.evaluate(parts.model, INDICES, prefix="val")
    assert list(result) == ["val_loss", "val_acc"]
    assert 0.0 <= result["val_acc"] <= 1.0 and result["val_loss"] > 0
    assert parts.model.training
    assert fit.evaluate(parts.model, INDICES, prefix="val") == result  # never mixed, no dropout


def test_write_checkpoint_writes_where_asked(
    trainer: Callable[..., Trainer], tmp_path: Path
) -> None:
    parts = trainer().setup(INDICES)
    path = tmp_path / "deep" / "folder" / "weights.safetensors"
    write_checkpoint(parts.model, path)
    assert path.is_file() and path.stat().st_size > 0
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_the_best_epoch_is_kept_and_checkpointed_and_patience_runs_out(
    trainer: Callable[..., Trainer], tmp_path: Path
) -> None:
    fit = trainer(out_dir=tmp_path / "fold", early_stop_metric="val_loss", patience=2)
    parts, standing = fit.setup(INDICES), Standing()
    fit.record_epoch(parts.model, standing, 0, {"val_loss": 1.0})
    assert fit.best_path == tmp_path / "fold" / "best.safetensors" and fit.best_path.is_file()
    assert standing.best_epoch == 0 and standing.best_state is not None
    written = fit.best_path.stat().st_mtime_ns
    fit.record_epoch(parts.model, standing, 1, {"val_loss": 2.0})
    assert (standing.best_epoch, standing.bad_epochs, standing.metrics) == (0, 1, {"val_loss": 2.0})
    assert not fit.out_of_patience(standing)
    fit.record_epoch(parts.model, standing, 2, {"val_loss": float("nan")})  # NaN never improves
    assert standing.bad_epochs == 2 and fit.out_of_patience(standing)
    assert fit.best_path.stat().st_mtime_ns == written
    fit.record_epoch(parts.model, standing, 3, {"val_loss": 0.5})
    assert (standing.best_epoch, standing.bad_epochs, standing.best) == (3, 0, {"val_loss": 0.5})
    assert not trainer().out_of_patience(standing) and trainer().best_path is None


def test_the_resume_state_round_trips(trainer: Callable[..., Trainer], tmp_path: Path) -> None:
    fit = trainer()
    parts = fit.setup(INDICES)
    standing = Standing()
    metrics = fit.run_epoch(parts, INDICES[:40], INDICES[40:], 0)
    fit.record_epoch(parts.model, standing, 0, metrics)
    path = tmp_path / "fold" / STATE_FILE
    save_state(path, training_state(parts, standing, 0))

    fresh = trainer().setup(INDICES, resumed=True)
    restored = restore_state(fresh, load_state(path))
    assert restored.start == 1 and restored.best_epoch == 0 and restored.bad_epochs == 0
    assert restored.best == metrics and restored.metrics == metrics
    assert restored.best_state is not None
    for name, value in weights(parts).items():
        assert torch.equal(weights(fresh)[name], value)
        assert torch.equal(restored.best_state[name], value)
    assert torch.equal(fresh.order.get_state(), parts.order.get_state())
    assert fresh.schedule.state_dict() == parts.schedule.state_dict()
    assert (
        fresh.optimizer.state_dict()["state"].keys() == parts.optimizer.state_dict()["state"].keys()
    )
    # the next epoch draws the same permutation on both
    a = torch.randperm(60, generator=parts.order)
    assert torch.equal(torch.randperm(60, generator=fresh.order), a)


def test_a_resume_state_of_another_spec_is_refused(
    trainer: Callable[..., Trainer], tmp_path: Path
) -> None:
    parts = trainer().setup(INDICES)
    state = training_state(parts, Standing(), 0)
    state["model"] = {**state["model"], "extra.weight": torch.zeros(2)}
    with pytest.raises(StateError, match="do not fit the run's spec"):
        restore_state(trainer().setup(INDICES), state)
