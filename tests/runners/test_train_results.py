"""Right answers or a clear refusal from ``arch train``: early stopping on a metric the run logs,
CV groups that only average folds trained alike (each fold once), a resumed CV run that finishes
its whole group, labelled summaries, epochs counted alike everywhere, interrupts by signal, run
names and tags, and the real duration of eval runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from archlab.cli.main import cli
from archlab.errors import UserInputError
from archlab.registry import Registry
from archlab.runners.config import RESULT_NEUTRAL, TrainConfig
from archlab.runners.progress import NullProgress
from archlab.runners.train import evaluate_run, resume, train
from archlab.runners.trainer import Trainer, epoch_metrics

ROOT = Path(__file__).resolve().parents[2]
VIT = ROOT / "specs" / "vit-tiny-digits.json"
Doc = dict[str, Any]


def config(**changes: Any) -> TrainConfig:
    base: dict[str, Any] = {"epochs": 1, "warmup": 0.5, "batch_size": 128, "lr": 2e-3}
    return TrainConfig(**{**base, **changes})


@pytest.fixture
def small(random_images: Callable[[int, int], str]) -> str:
    """120 random 8x8 images of 3 classes."""
    return random_images(120, 3)


# ------------------------------------------------------------------------- 1. early stopping


@pytest.mark.parametrize("metric", ["val_accuracy", "val_ppl", "accuracy"])
def test_early_stopping_on_a_metric_never_logged_is_refused(
    registry: Registry, small: str, metric: str
) -> None:
    with pytest.raises(UserInputError, match=rf"a classify run never logs '{metric}'") as err:
        train(VIT, config(data=small, early_stop_metric=metric), registry)
    assert "train_loss, val_loss, val_acc, lr, samples_per_s" in str(err.value)
    if metric == "val_accuracy":
        assert "did you mean 'val_acc'?" in str(err.value)
    assert registry.runs() == []  # refused before anything was recorded


def test_a_language_model_has_no_val_acc_to_stop_on(
    registry: Registry, tmp_path: Path, minimal_gpt: Callable[[], Doc]
) -> None:
    text = tmp_path / "book.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 50)
    cfg = config(data=f"text:{text}", early_stop_metric="val_acc")
    with pytest.raises(UserInputError, match=r"an? lm run never logs 'val_acc'.*val_ppl"):
        train(minimal_gpt(), cfg, registry)
    result = CliRunner().invoke(
        cli, ["train", str(VIT), "--early-stop", "val_accuracy", "--registry", str(registry.url)]
    )
    assert result.exit_code == 2 and "did you mean 'val_acc'?" in result.output
    assert "Traceback" not in result.output


def test_the_metric_names_early_stopping_checks_are_those_an_epoch_logs(
    registry: Registry, small: str
) -> None:
    report = train(VIT, config(data=small, early_stop_metric="val_acc"), registry)
    run = registry.get(report.runs[0])
    assert set(run.metrics) == set(epoch_metrics("classify"))
    assert set(report.results[0].final) == set(epoch_metrics("classify"))


def test_early_stopping_follows_the_direction_the_registry_records(
    registry: Registry, small: str
) -> None:
    """``lr`` reads as higher-better by its name; declared lower-better in the registry, the
    falling learning rate after the warm-up improves every epoch: no early stop, the last epoch
    is the best, as the run's recorded best value says too."""
    registry.declare_metrics({"lr": "min"})
    cfg = config(data=small, epochs=4, warmup=1.0, early_stop_metric="lr", patience=2)
    report = train(VIT, cfg, registry)
    [result] = report.results
    assert (result.stopped_early, result.epochs_run, result.best_epoch) == (False, 4, 3)
    run = registry.get(report.runs[0])
    assert run.summaries["lr"].best_step == 4 == int(run.tags["best_epoch"])
    assert result.best["lr"] == run.summaries["lr"].best


# ---------------------------------------------------------------------------- 2. CV groups


def test_a_fold_joins_its_group_only_with_the_groups_settings_and_once(
    registry: Registry, small: str
) -> None:
    first = train(VIT, config(data=small, folds=3, fold=0), registry)
    assert first.group is not None
    join = {"data": small, "folds": 3, "cv_group": first.group}
    for changes, named in [
        ({"lr": 1e-3}, "lr 0.002 -> 0.001"),
        ({"epochs": 2}, "epochs 1 -> 2"),
        ({"mixup": 0.2}, "mixup 0.0 -> 0.2"),
        ({"seed": 3, "label_smoothing": 0.1}, "label_smoothing 0.0 -> 0.1; seed 0 -> 3"),
    ]:
        with pytest.raises(UserInputError, match="trained with other settings") as err:
            train(VIT, config(**join, fold=1, **changes), registry)
        assert named in str(err.value)
        assert "Only these may differ: " + ", ".join(sorted(RESULT_NEUTRAL)) in str(err.value)
    # the fold already completed is refused, wherever the check is made
    with pytest.raises(UserInputError, match=r"fold 0 of CV group \w+ is already completed") as err:
        train(VIT, config(**join, fold=0), registry)
    assert "folds still to train: 1, 2" in str(err.value)
    with pytest.raises(UserInputError, match="already completed"):
        registry.start_run(VIT, cv_group=first.group, fold=0)
    # what cannot change results may differ: the device, the labels
    second = train(VIT, config(**join, fold=1, device="cpu", name="b", tags={"k": "v"}), registry)
    assert second.runs and registry.group(first.group).aggregates["val_acc"].n == 2
    result = CliRunner().invoke(
        cli, ["train", str(VIT), "--data", small, "--epochs", "1", "--warmup", "0.5",
              "--batch-size", "128", "--lr", "0.003", "--folds", "3", "--fold", "2",
              "--cv-group", first.group, "--registry", str(registry.url)],
    )  # fmt: skip
    assert result.exit_code == 2 and "lr 0.002 -> 0.003" in result.output
    assert len(registry.group(first.group).runs) == 2  # nothing recorded for the refusals


# ----------------------------------------------- 3. resuming a CV run continues the group


class StopInFold(NullProgress):
    """Ctrl-C in the given fold (0-based among those trained), after its first epoch."""

    def __init__(self, fold: int) -> None:
        self.fold, self.at = fold, -1

    def start_fold(self, fold: int, folds: int, run_id: str, epochs: int, batches: int) -> None:
        self.at = fold

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.at == self.fold:
            raise KeyboardInterrupt


def test_resuming_a_fold_of_a_cv_run_finishes_the_whole_group(
    registry: Registry, small: str
) -> None:
    cfg = config(data=small, folds=3, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        train(VIT, cfg, registry, progress=StopInFold(1))  # fold 0 done, fold 1 cut, 2 never
    [stopped] = [r for r in registry.runs() if r.status == "interrupted"]
    assert stopped.cv is not None and stopped.cv.fold == 1
    assert len(registry.group(stopped.cv.group).runs) == 2
    report = resume(stopped.id, registry)
    assert report.runs[0] == stopped.id and len(report.runs) == 2  # fold 1 resumed, 2 trained
    group = registry.group(stopped.cv.group)
    assert registry.completed_folds(group.id).keys() == {0, 1, 2}
    assert group.aggregates["val_acc"].n == 3 and group.aggregates["val_acc"].std is not None


def test_resuming_one_scheduled_fold_resumes_that_fold_alone(
    registry: Registry, small: str
) -> None:
    """``--fold i`` runs (a scheduler's array job) each own their fold: resuming one must not
    train the others, which other jobs are training."""
    with pytest.raises(KeyboardInterrupt):
        train(VIT, config(data=small, folds=3, fold=0, epochs=2), registry, progress=StopInFold(0))
    [stopped] = registry.runs()
    report = resume(stopped.id, registry)
    assert report.runs == [stopped.id] and len(registry.runs()) == 1


def test_one_fold_has_a_mean_and_no_std(registry: Registry, small: str) -> None:
    report = train(VIT, config(data=small, folds=3, fold=0), registry)
    assert report.group is not None
    agg = registry.group(report.group).aggregates["val_acc"]
    assert agg.n == 1 and agg.std is None  # the sample std of one value is undefined
    assert registry.runs(where="std.val_acc >= 0") == []
    assert len(registry.runs(where="mean.val_acc >= 0")) == 1
    url = str(registry.url)
    shown = CliRunner().invoke(cli, ["runs", "show", report.runs[0], "--registry", url])
    listed = CliRunner().invoke(cli, ["runs", "list", "--group", "--registry", url])
    for result in (shown, listed):
        assert result.exit_code == 0, result.output
        assert "± 0" not in result.output and "± -" not in result.output
    assert "(1 fold)" in shown.output and "1 of 3 folds" in listed.output


# ------------------------------------------- 4. labelled summaries; 6. epochs; 9. names


def test_the_summary_says_which_value_each_line_shows_and_runs_carry_names_and_tags(
    tmp_path: Path, small: str
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    result = CliRunner().invoke(
        cli, ["train", str(VIT), "--data", small, "--epochs", "3", "--warmup", "0.5",
              "--folds", "2", "--early-stop", "val_acc", "--patience", "5", "--quiet",
              "--name", "baseline", "--tag", "team=vision", "--tag", "note=a=b",
              "--registry", url],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    fold_lines = [line for line in lines if line.startswith("  run ")]
    assert len(fold_lines) == 2
    for line in fold_lines:
        assert " by val_acc: val_loss " in line and "; final (epoch 3): val_loss " in line
    assert any("mean of final values over 2 of 2 folds" in line for line in lines)
    with Registry(url) as reg:
        runs = reg.runs()
        assert len(runs) == 2
        for run in runs:
            assert run.tags["name"] == "baseline" and run.tags["team"] == "vision"
            assert run.tags["note"] == "a=b"
            # epochs are counted from 1 in the registry as on the console
            steps = [s for s, _e, _v, _t in reg.metric_history(run.id, "val_acc")]
            assert steps == [1, 2, 3]
            assert run.summaries["val_acc"].best_step == int(run.tags["best_epoch"])
        assert runs[0].cv is not None
        group = reg.group(runs[0].cv.group)
        assert group.config["name"] == "baseline" and group.config["tags"]["team"] == "vision"


# -------------------------------------------------------------------- 7. eval's duration


def test_an_eval_run_records_how_long_the_evaluation_took(
    registry: Registry, small: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = train(VIT, config(data=small), registry)
    evaluate = Trainer.evaluate

    def slow(self: Trainer, *args: Any, **kwargs: Any) -> dict[str, float]:
        time.sleep(0.5)
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "evaluate", slow)
    run = registry.get(evaluate_run(report.runs[0], registry).run)
    assert run.ended is not None and run.ended - run.started >= 0.5


# ------------------------------------------------------------------------ 5. interrupts


def _arch(*args: str) -> list[str]:
    return [sys.executable, "-m", "archlab", *args]


def _interrupt(args: list[str], signum: int, after: str) -> subprocess.CompletedProcess[str]:
    """Run ``arch`` with plain progress lines, send ``signum`` once a line contains ``after``."""
    env = {**os.environ, "TTY_INTERACTIVE": "0"}
    proc = subprocess.Popen(
        _arch(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    out = []
    for line in proc.stdout:
        out.append(line)
        if after in line:
            proc.send_signal(signum)
            break
    rest, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(out) + rest, err)


@pytest.mark.slow
def test_sigterm_and_ctrl_c_record_an_interrupted_run_that_resumes(
    tmp_path: Path, small: str
) -> None:
    """SIGTERM (Slurm, Kubernetes) and SIGINT (Ctrl-C) in the middle of training: the run is
    recorded interrupted, one line says how to continue, the exit code is 143 / 130, no
    traceback; --resume then completes the run."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    flags = ["--data", small, "--epochs", "40", "--warmup", "0.5", "--batch-size", "32"]
    term = _interrupt(["train", str(VIT), *flags, "--registry", url], signal.SIGTERM, "epoch 2/")
    assert term.returncode == 128 + signal.SIGTERM, term.stderr
    assert "Traceback" not in term.stderr and "failed" not in term.stderr
    [line] = term.stderr.strip().splitlines()
    with Registry(url) as reg:
        [run] = reg.runs()
    assert run.status == "interrupted" and run.error == "interrupted by SIGTERM"
    assert line.startswith(f"interrupted: run {run.id} stopped by SIGTERM")
    assert line.endswith(f"continue with: arch train --resume {run.id}")
    again = _interrupt(["train", "--resume", run.id, "--registry", url], signal.SIGINT, "epoch")
    assert again.returncode == 128 + signal.SIGINT, again.stderr
    assert "Traceback" not in again.stderr and "Aborted" not in again.stderr
    [line] = again.stderr.strip().splitlines()
    assert line == (
        f"interrupted: run {run.id} stopped by Ctrl-C and recorded as interrupted; "
        f"continue with: arch train --resume {run.id}"
    )
    with Registry(url) as reg:
        assert reg.get(run.id).status == "interrupted"
    done = subprocess.run(
        _arch("train", "--resume", run.id, "--registry", url, "--quiet"),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with Registry(url) as reg:
        finished = reg.get(run.id)
    assert finished.status == "completed" and finished.summaries["val_acc"].count == 40
    assert json.loads(json.dumps(finished.config))["epochs"] == 40


def test_a_bench_run_starts_when_its_measurement_started(registry: Registry) -> None:
    from archlab.runners.benchmark import benchmark, record_bench

    report = benchmark(VIT, device="cpu", batches=(1, 2), warmup=1, iters=3)
    assert report.started is not None
    time.sleep(0.2)  # recorded a while after the measurement
    run = registry.get(record_bench(report, registry))
    assert run.started == report.started  # not the moment it was recorded
    assert run.ended is not None and run.ended - run.started >= 0.2


@pytest.mark.parametrize(
    ("signum", "cause"), [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C")]
)
def test_the_cli_reports_an_interruption_in_one_line_with_the_signals_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: int, cause: str
) -> None:
    from archlab.runners import train as train_module
    from archlab.runners.lifecycle import Interrupted

    def interrupted(*_args: Any, **_kwargs: Any) -> None:
        exc = Interrupted(signum)
        exc.run = "abcd1234"
        raise exc

    monkeypatch.setattr(train_module, "train", interrupted)
    result = CliRunner().invoke(
        cli, ["train", str(VIT), "--quiet", "--registry", f"sqlite:///{tmp_path / 'r.db'}"]
    )
    assert result.exit_code == 128 + signum
    assert result.stderr.splitlines() == [
        f"interrupted: run abcd1234 stopped by {cause} and recorded as interrupted; "
        "continue with: arch train --resume abcd1234"
    ]


def test_a_run_recorded_with_epochs_from_0_resumes_in_its_own_numbering(
    registry: Registry, small: str
) -> None:
    """Runs of older archlab versions recorded the first epoch at step 0: they stay readable as
    they are, and a resumed one goes on from its own last step (no migration)."""
    from sqlalchemy import text

    class StopAtSecondEpoch(NullProgress):
        def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(VIT, config(data=small, epochs=3), registry, progress=StopAtSecondEpoch())
    [stopped] = registry.runs()
    with registry.engine.begin() as conn:  # as an older archlab recorded it
        conn.execute(text("UPDATE metrics SET step = step - 1"))
        conn.execute(
            text("UPDATE metric_summaries SET last_step = last_step - 1, best_step = best_step - 1")
        )
    assert [s for s, *_ in registry.metric_history(stopped.id, "val_acc")] == [0, 1]
    resume(stopped.id, registry)
    run = registry.get(stopped.id)
    assert run.status == "completed"
    assert [s for s, *_ in registry.metric_history(stopped.id, "val_acc")] == [0, 1, 2]
    assert run.summaries["val_acc"].count == 3 and run.summaries["val_acc"].final_step == 2
