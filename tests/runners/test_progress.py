"""What ``arch train`` shows while it trains: plain lines off a terminal, the live display on one
(and how it ends), nothing with ``--quiet``, and the calls the training code makes."""

from __future__ import annotations

import io
import re
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from archlab.cli.main import cli
from archlab.registry import Registry
from archlab.runners.config import TrainConfig
from archlab.runners.progress import (
    NullProgress,
    PlainProgress,
    RichProgress,
    TrainProgress,
    headline,
    make_progress,
)
from archlab.runners.train import train

ROOT = Path(__file__).resolve().parents[2]
VIT = ROOT / "specs" / "vit-tiny-digits.json"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SHOW_CURSOR = "\x1b[?25h"


def fake_run(progress: TrainProgress, folds: int = 2, epochs: int = 3, batches: int = 4) -> None:
    """What ``train`` reports for a K-fold run, without training anything."""
    for fold in range(folds):
        progress.start_fold(fold, folds, f"run{fold}xyz", epochs, batches)
        for epoch in range(epochs):
            for b in range(batches):
                progress.batch(2.0 / (1 + b + epoch))
            metrics = {
                "train_loss": 0.5 - 0.1 * epoch,
                "val_loss": 0.4 - 0.1 * epoch,
                "val_acc": 0.95 + 0.01111 * epoch,
                "lr": 1e-3,
                "samples_per_s": 1234.5,
            }
            progress.epoch(epoch, metrics)
        progress.end_fold(2, {"val_loss": 0.2, "val_acc": 0.97222})


def rich_console() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=100)


# -- plain lines ----------------------------------------------------------------------------------


def test_plain_progress_writes_a_line_per_epoch_and_per_fold_start_and_end() -> None:
    out = io.StringIO()
    with PlainProgress(out) as progress:
        fake_run(progress, epochs=2)
    assert out.getvalue().splitlines() == [
        "fold 1/2 (run run0xyz): 2 epochs of 4 batches",
        "fold 1/2 epoch 1/2  train_loss 0.5  val_loss 0.4  val_acc 0.95",
        "fold 1/2 epoch 2/2  train_loss 0.4  val_loss 0.3  val_acc 0.9611",
        "fold 1/2 (run run0xyz): best epoch 3, val_acc 0.9722",
        "fold 2/2 (run run1xyz): 2 epochs of 4 batches",
        "fold 2/2 epoch 1/2  train_loss 0.5  val_loss 0.4  val_acc 0.95",
        "fold 2/2 epoch 2/2  train_loss 0.4  val_loss 0.3  val_acc 0.9611",
        "fold 2/2 (run run1xyz): best epoch 3, val_acc 0.9722",
    ]


def test_plain_progress_says_where_a_fold_was_interrupted() -> None:
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt), PlainProgress(out) as progress:
        progress.start_fold(0, 1, "abc", 1, 1)
        progress.epoch(0, {"val_ppl": 12.5})
        raise KeyboardInterrupt
    assert out.getvalue().splitlines() == [
        "fold 1/1 (run abc): 1 epoch of 1 batch",
        "fold 1/1 epoch 1/1  val_ppl 12.5",
        "fold 1/1 (run abc): interrupted after 1 of 1 epochs",
    ]


def test_null_progress_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with NullProgress() as progress:
        fake_run(progress)
    with pytest.raises(RuntimeError), NullProgress() as progress:
        raise RuntimeError("boom")
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ({"val_loss": 1.0, "val_acc": 0.5}, ("val_acc", 0.5)),
        ({"val_loss": 1.0, "val_ppl": 2.7}, ("val_ppl", 2.7)),
        ({"val_token_acc": 0.9, "val_loss": 1.0}, ("val_token_acc", 0.9)),
        ({"val_loss": 1.0, "train_loss": 2.0}, ("val_loss", 1.0)),
        ({"train_loss": 2.0}, None),
    ],
)
def test_the_headline_metric_is_the_tasks_validation_metric(
    metrics: dict[str, float], expected: tuple[str, float] | None
) -> None:
    assert headline(metrics) == expected


# -- the live display -----------------------------------------------------------------------------


def test_rich_progress_shows_folds_epochs_batches_and_metrics() -> None:
    console = rich_console()
    with RichProgress(console, interval=0.0) as progress:
        fake_run(progress)
        assert progress.bars.live.is_started
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert out.endswith(SHOW_CURSOR)  # stopped: the cursor is back
    lines = [line.rstrip() for line in ANSI.sub("", out).splitlines()[-3:]]
    assert (
        lines[0].startswith("fold 2/2") and "run run1xyz: best epoch 3, val_acc 0.9722" in lines[0]
    )
    assert lines[1].startswith("epoch 3/3") and "train_loss 0.3  val_acc 0.9722" in lines[1]
    assert lines[2].startswith("batch 4/4") and "loss 0.3333" in lines[2]
    assert all("took 0:00:00" in line and len(line) <= 100 for line in lines), lines
    assert "fold 1/2" in ANSI.sub("", out)  # the first fold was drawn on the way
    assert not progress.bars.live.is_started


@pytest.mark.parametrize(
    ("error", "mark"), [(KeyboardInterrupt, "interrupted"), (RuntimeError, "failed")]
)
def test_rich_progress_ends_cleanly_when_training_is_interrupted(
    error: type[BaseException], mark: str
) -> None:
    console = rich_console()
    stdout = sys.stdout
    with pytest.raises(error), RichProgress(console) as progress:  # the error, and only it
        progress.start_fold(0, 5, "abc12345", 30, 45)
        progress.batch(1.25)
        progress.epoch(0, {"train_loss": 1.5, "val_loss": 1.4, "val_acc": 0.5})
        progress.batch(1.125)
        raise error
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert out.endswith(SHOW_CURSOR)
    lines = [line.rstrip() for line in ANSI.sub("", out).splitlines()[-3:]]
    assert lines[0].startswith("fold 1/5") and f"run abc12345 {mark}" in lines[0]
    assert lines[1].startswith("epoch 2/30") and "val_acc 0.5" in lines[1]
    assert lines[2].startswith("batch 1/45") and "loss 1.125" in lines[2]
    assert not progress.bars.live.is_started and sys.stdout is stdout  # redirection undone
    refreshers = [t for t in threading.enumerate() if type(t).__name__ == "_RefreshThread"]
    for thread in refreshers:  # told to stop: gone within one refresh period
        thread.join(timeout=1.0)
        assert not thread.is_alive()


def test_rich_progress_draws_nothing_when_no_fold_started() -> None:
    console = rich_console()
    with pytest.raises(ValueError), RichProgress(console):
        raise ValueError("bad data")  # as when the data fail to load
    assert console.file.getvalue() == ""  # type: ignore[attr-defined]


def test_make_progress_picks_the_display_for_the_output() -> None:
    assert type(make_progress(quiet=True, console=rich_console())) is NullProgress
    live = Console(file=io.StringIO(), force_terminal=True, force_interactive=True)
    assert type(make_progress(quiet=False, console=live)) is RichProgress
    assert type(make_progress(quiet=False, console=Console(file=io.StringIO()))) is PlainProgress


# -- the training code's calls and the CLI -------------------------------------------------------


class Recorder:
    """A ``TrainProgress`` that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def start_fold(self, fold: int, folds: int, run_id: str, epochs: int, batches: int) -> None:
        self.calls.append(("start_fold", fold, folds, run_id, epochs, batches))

    def batch(self, loss: float) -> None:
        assert type(loss) is float
        self.calls.append(("batch",))

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.calls.append(("epoch", epoch, sorted(metrics)))

    def end_fold(self, best_epoch: int, best: dict[str, float], by: str | None = None) -> None:
        self.calls.append(("end_fold", best_epoch, best["val_acc"]))


def test_train_reports_folds_batches_and_epochs(tmp_path: Path) -> None:
    recorder = Recorder()
    config = TrainConfig(epochs=2, warmup=0.5, batch_size=512, lr=2e-3)
    with Registry(f"sqlite:///{tmp_path / 'r.db'}", artifacts=tmp_path / "a") as registry:
        report = train(VIT, config, registry, progress=recorder)
        [run_id] = report.runs
        assert registry.get(run_id).summaries["val_acc"].count == 2  # the registry as before
    [result] = report.results
    keys = ["lr", "samples_per_s", "train_loss", "val_acc", "val_loss"]
    batches = -(-len(report.plan.folds[0].train) // 512)
    assert recorder.calls == [
        ("start_fold", 0, 1, run_id, 2, batches),
        *[("batch",)] * batches,
        ("epoch", 0, keys),
        *[("batch",)] * batches,
        ("epoch", 1, keys),
        ("end_fold", result.best_epoch, result.best["val_acc"]),
    ]


def cli_train(tmp_path: Path, *args: str) -> list[str]:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    result = CliRunner().invoke(
        cli, ["train", str(VIT), "--epochs", "1", "--warmup", "0.5", "--batch-size", "256",
              "--registry", url, *args],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_the_cli_with_quiet_prints_only_the_summary(tmp_path: Path) -> None:
    lines = cli_train(tmp_path, "--quiet")
    assert len(lines) == 2, lines
    assert lines[0].startswith("vit-tiny-digits: digits:")
    assert re.fullmatch(
        r"  run \w+: best epoch 1 by val_loss: val_loss \S+  val_acc \S+; "
        r"final \(epoch 1\): val_loss \S+  val_acc \S+",
        lines[1],
    )


def test_the_cli_writes_plain_lines_off_a_terminal(tmp_path: Path) -> None:
    lines = cli_train(tmp_path, "--folds", "2")
    patterns = [
        r"fold 1/2 \(run (\w+)\): 1 epoch of 4 batches",
        r"fold 1/2 epoch 1/1  train_loss \S+  val_loss \S+  val_acc \S+",
        r"fold 1/2 \(run (\w+)\): best epoch 1 by val_loss: val_acc \S+",
        r"fold 2/2 \(run (\w+)\): 1 epoch of 4 batches",
        r"fold 2/2 epoch 1/1  train_loss \S+  val_loss \S+  val_acc \S+",
        r"fold 2/2 \(run (\w+)\): best epoch 1 by val_loss: val_acc \S+",
        r"vit-tiny-digits: digits: .*",
    ]
    assert len(lines) > len(patterns), lines
    for pattern, line in zip(patterns, lines, strict=False):
        assert re.fullmatch(pattern, line), (pattern, line)
    assert "\x1b" not in "".join(lines)  # no escape codes in logs
