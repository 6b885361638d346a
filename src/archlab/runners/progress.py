"""What ``arch train`` shows while it trains: a live display, plain log lines, or nothing.

The training code reports through ``TrainProgress``, four calls: ``start_fold`` when a fold's run
begins, ``batch`` after every training batch (with the batch's loss), ``epoch`` after every
epoch's evaluation (with the metrics the registry records) and ``end_fold`` with the fold's best
epoch. Three displays implement it, each a context manager:

- ``RichProgress`` for a terminal: three bars (folds, the current fold's epochs, the current
  epoch's batches) with the last loss, the latest validation metric and the time left; the
  display is started by the first fold and stopped cleanly when the ``with`` block ends, by an
  exception or a KeyboardInterrupt included.
- ``PlainProgress`` for logs and pipes: a line when a fold starts, one per epoch, one when a fold
  ends (``fold 2/5 (run abc12345): best epoch 17, val_acc 0.9722``).
- ``NullProgress`` for ``--quiet``: nothing.

``make_progress`` picks one of them.
"""

from __future__ import annotations

import sys
import time
from contextlib import AbstractContextManager
from types import TracebackType
from typing import IO, Protocol, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.table import Column
from rich.text import Text

# The validation metric a display shows, by task: the first of these the metrics hold.
HEADLINE = ("val_acc", "val_ppl", "val_token_acc", "val_loss")
_NOT_SHOWN = ("lr", "samples_per_s")  # recorded in the registry, left out of the plain lines


class TrainProgress(Protocol):
    """What the training code tells a display. Folds are numbered by their position among the
    folds one call trains (``fold`` of ``folds``, from 0), epochs from 0, as the registry counts
    them; displays show both from 1."""

    def start_fold(self, fold: int, folds: int, run_id: str, epochs: int, batches: int) -> None:
        """Fold ``fold`` of ``folds`` starts, recorded as run ``run_id``: up to ``epochs`` epochs
        of ``batches`` training batches each."""

    def batch(self, loss: float) -> None:
        """A training batch finished with this loss (called for every batch: keep it cheap)."""

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Epoch ``epoch`` (from 0) finished and was evaluated: the metrics recorded for it."""

    def end_fold(self, best_epoch: int, best: dict[str, float], by: str | None = None) -> None:
        """The fold finished: its best epoch (from 0), chosen by metric ``by``, and that epoch's
        metrics."""


def headline(metrics: dict[str, float]) -> tuple[str, float] | None:
    """The validation metric to show for ``metrics`` (accuracy, perplexity or token accuracy,
    else the validation loss), or None when there is none."""
    for name in HEADLINE:
        if name in metrics:
            return name, metrics[name]
    return None


_D = TypeVar("_D", bound="NullProgress")


class NullProgress:
    """Shows nothing (``--quiet``); the base of the other displays, which are context managers
    like it."""

    def __enter__(self: _D) -> _D:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def start_fold(self, fold: int, folds: int, run_id: str, epochs: int, batches: int) -> None:
        """See ``TrainProgress.start_fold``."""

    def batch(self, loss: float) -> None:
        """See ``TrainProgress.batch``."""

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """See ``TrainProgress.epoch``."""

    def end_fold(self, best_epoch: int, best: dict[str, float], by: str | None = None) -> None:
        """See ``TrainProgress.end_fold``."""


class PlainProgress(NullProgress):
    """One line per epoch, and one as each fold starts and ends, for logs and pipes. Lines go to
    ``file`` (standard output when None, looked up at each line) and are flushed at once."""

    def __init__(self, file: IO[str] | None = None) -> None:
        self._file = file
        self._fold = ""  # "fold 2/5", while a fold runs
        self._run_id = ""
        self._epochs = 0
        self._done = 0  # epochs finished in the current fold

    def _say(self, line: str) -> None:
        print(line, file=self._file if self._file is not None else sys.stdout, flush=True)

    def start_fold(self, fold: int, folds: int, run_id: str, epochs: int, batches: int) -> None:
        self._fold, self._run_id = f"fold {fold + 1}/{folds}", run_id
        self._epochs, self._done = epochs, 0
        self._say(
            f"{self._fold} (run {run_id}): {_count(epochs, 'epoch')} of {_count(batches, 'batch')}"
        )

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._done = epoch + 1
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k not in _NOT_SHOWN)
        self._say(f"{self._fold} epoch {epoch + 1}/{self._epochs}  {shown}")

    def end_fold(self, best_epoch: int, best: dict[str, float], by: str | None = None) -> None:
        self._say(f"{self._fold} (run {self._run_id}): {_best_epoch(best_epoch, best, by)}")
        self._fold = ""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and self._fold:
            how = (
                "interrupted" if exc_type is KeyboardInterrupt else f"failed ({exc_type.__name__})"
            )
            self._say(
                f"{self._fold} (run {self._run_id}): {how} after {self._done} of "
                f"{self._epochs} epochs"
            )


class _Eta(ProgressColumn):
    """``eta 0:03:12`` while a bar moves (from rich's speed estimate), ``took 0:00:41`` once it is
    full."""

    max_refresh = 0.5  # the estimate would flicker at every refresh otherwise

    def render(self, task: Task) -> Text:
        if task.finished:
            took = task.finished_time if task.finished_time is not None else task.elapsed
            return Text(f"took {_clock(took)}", style="progress.elapsed")
        return Text(f"eta {_clock(task.time_remaining)}", style="progress.remaining")


def _count(n: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``, ``4 batches``."""
    return f"{n} {noun}" if n == 1 else f"{n} {'batches' if noun == 'batch' else noun + 's'}"


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class RichProgress(NullProgress):
    """A live display on a terminal: a bar for the folds, one for the current fold's epochs and
    one for the current epoch's batches, with the run id, the last epoch's train loss and
    validation metric, the last batch's loss, and the time left on each bar.

    The display starts with the first fold and stops when the ``with`` block ends, whatever ends
    it: the last frame is drawn in full (marked ``interrupted`` or ``failed`` after an exception)
    and the cursor restored. Batches move the bars at most every ``interval`` seconds (and at an
    epoch's first and last batch), so ``batch`` costs next to nothing.
    """

    def __init__(self, console: Console | None = None, *, interval: float = 0.05) -> None:
        self.console = console if console is not None else Console()
        self.interval = interval
        self.bars = Progress(
            TextColumn("{task.description}", table_column=Column(no_wrap=True)),
            BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=10)),
            TextColumn("{task.fields[info]}", table_column=Column(no_wrap=True)),
            _Eta(table_column=Column(no_wrap=True)),
            console=self.console,
            expand=True,
            speed_estimate_period=60.0,
        )
        self._tasks: tuple[TaskID, TaskID, TaskID] | None = None  # folds, epochs, batches
        self._fold = self._epochs = self._batches = 0
        self._epoch = 0  # epochs finished in this fold
        self._batch = 0  # batches finished in this (or, between epochs, the last) epoch
        self._between = True  # no epoch running: the bars show the last finished one
        self._loss: float | None = None  # the last batch's
        self._fold_info = ""  # the folds bar's text
        self._shown = 0.0  # when a batch last moved the bars

    def start_fold(self, fold: int, folds: int, run_id: str, epochs: int, batches: int) -> None:
        self._fold, self._epochs = fold, max(epochs, 1)
        self._batches = max(batches, 1)
        self._epoch, self._batch, self._between, self._loss = 0, 0, True, None
        self._fold_info = f"run {run_id}"
        if self._tasks is None:
            self._tasks = (
                self.bars.add_task("", total=folds, info=""),
                self.bars.add_task("", total=self._epochs, info=""),
                self.bars.add_task("", total=self._batches, info=""),
            )
            self.bars.start()
        folds_task, epochs_task, batches_task = self._tasks
        self.bars.update(
            folds_task, total=folds, description=f"fold {fold + 1}/{folds}", info=self._fold_info
        )
        self.bars.reset(epochs_task, total=self._epochs, description=f"epoch 1/{epochs}", info="")
        self.bars.reset(batches_task, total=self._batches, description=self._count(0), info="")
        self._show()

    def batch(self, loss: float) -> None:
        if self._tasks is None:
            return
        if self._between:  # an epoch's first batch
            self._between, self._batch = False, 0
            self.bars.reset(self._tasks[2], total=self._batches, description=self._count(0))
            self._shown = 0.0
        self._batch += 1
        self._loss = loss
        now = time.monotonic()
        if now - self._shown >= self.interval or self._batch >= self._batches:
            self._shown = now
            self._show()

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if self._tasks is None:
            return
        self._epoch, self._batch, self._between = epoch + 1, self._batches, True
        shown = [f"train_loss {metrics['train_loss']:.4g}"] if "train_loss" in metrics else []
        metric = headline(metrics)
        if metric is not None:
            shown.append(f"{metric[0]} {metric[1]:.4g}")
        self.bars.update(self._tasks[1], info="  ".join(shown))
        self._show()

    def end_fold(self, best_epoch: int, best: dict[str, float], by: str | None = None) -> None:
        if self._tasks is None:
            return
        self._fold_info += f": {_best_epoch(best_epoch, best, by)}"
        self.bars.update(self._tasks[0], completed=self._fold + 1, info=self._fold_info)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._tasks is None:
            return
        try:
            if exc_type is not None:
                how = "interrupted" if exc_type is KeyboardInterrupt else "failed"
                info = f"{escape(self._fold_info)} [bold red]{how}[/]"
                self.bars.update(self._tasks[0], info=info)
        finally:
            self.bars.stop()  # draws the last frame in full and restores the cursor

    def _count(self, batch: int) -> str:
        return f"batch {batch}/{self._batches}"

    def _show(self) -> None:
        """Bring the three bars to the current fold, epoch and batch."""
        assert self._tasks is not None
        folds_task, epochs_task, batches_task = self._tasks
        batch = min(self._batch, self._batches)
        done = min(self._epoch + (0 if self._between else batch / self._batches), self._epochs)
        running = max(self._epoch, 1) if self._between else min(self._epoch + 1, self._epochs)
        loss = f"loss {self._loss:.4g}" if self._loss is not None else ""
        self.bars.update(batches_task, completed=batch, description=self._count(batch), info=loss)
        self.bars.update(epochs_task, completed=done, description=f"epoch {running}/{self._epochs}")
        self.bars.update(folds_task, completed=self._fold + done / self._epochs)


def make_progress(
    quiet: bool, console: Console | None = None
) -> AbstractContextManager[TrainProgress]:
    """The display for ``arch train``: nothing when ``quiet``; the live display when ``console``
    (standard output when None) is a terminal that can redraw (rich's ``is_interactive``: a
    terminal whose TERM is not ``dumb``; ``TTY_INTERACTIVE=0/1`` decides otherwise); plain lines
    to the console's file otherwise."""
    if quiet:
        return NullProgress()
    console = console if console is not None else Console()
    if console.is_interactive:
        return RichProgress(console)
    return PlainProgress(console.file)


def _best_epoch(best_epoch: int, best: dict[str, float], by: str | None) -> str:
    """``best epoch 3 by val_loss: val_acc 0.9722``: the epoch, what chose it, what it scored."""
    metric = headline(best)
    if by is None:
        shown = f", {metric[0]} {metric[1]:.4g}" if metric is not None else ""
        return f"best epoch {best_epoch + 1}{shown}"
    shown = f": {metric[0]} {metric[1]:.4g}" if metric is not None else ""
    return f"best epoch {best_epoch + 1} by {by}{shown}"
