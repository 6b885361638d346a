"""Signals: how a training process stops when it is asked to.

Ctrl-C (SIGINT) and SIGTERM (what Slurm, Kubernetes and ``kill`` send) both end a training the
same way: ``interruptible()`` turns either signal into an ``Interrupted`` exception in the main
thread (inside the training loop at the next batch: ``deferred()``), the run's registry handle
records the run as ``interrupted`` as the exception passes, and the CLI prints one line (how to
continue) and exits with ``128 + the signal's number``: 130 after SIGINT, 143 after SIGTERM. A
second signal while the first is being handled is ignored, so the registry write that records
the interruption is not cut short.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

#: the signals that interrupt a training: Ctrl-C, and a scheduler's or ``kill``'s request
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A training stopped by a signal. A ``KeyboardInterrupt``, so every ``except Exception``
    lets it through, and a registry run handle records the run as interrupted.

    ``run`` is the run that was training (None before the first one started), set by the code
    that knows it; ``exit_code`` is the shell's convention, 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.run: str | None = None
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _State:
    """The signal handling of this process: active inside ``interruptible()``."""

    active = False
    fired = False  # a signal arrived: later ones are ignored
    deferring = False  # inside ``deferred()``: a signal is noted, raised at the next check
    pending: int | None = None


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise ``Interrupted`` (once: later signals are
    ignored until the block is left). The previous handlers come back afterwards. Outside the
    main thread signals cannot be handled, and a nested block changes nothing: the block runs
    as it is."""
    if _State.active or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, _frame: FrameType | None) -> None:
        if _State.fired:
            return
        _State.fired = True
        if _State.deferring:
            _State.pending = signum
            return
        raise Interrupted(signum)

    previous: dict[int, Any] = {}
    for number in SIGNALS:
        previous[number] = signal.signal(number, handle)
    _State.active, _State.fired, _State.pending = True, False, None
    try:
        yield
    finally:
        _State.active, _State.deferring = False, False
        for restored, handler in previous.items():
            # None: the previous handler was not set from Python; the default is the best guess
            signal.signal(restored, signal.SIG_DFL if handler is None else handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block (the training loop) a signal is noted, not raised where it lands: an
    exception raised inside a library's callback or finaliser may be swallowed (and print a
    traceback). ``check()``, called between batches and after the block, raises it."""
    before = _State.deferring
    _State.deferring = _State.active
    try:
        yield
    finally:
        _State.deferring = before


def check() -> None:
    """Raise the interruption a signal asked for inside ``deferred()``, if one did."""
    if _State.pending is not None:
        signum, _State.pending = _State.pending, None
        raise Interrupted(signum)


@contextlib.contextmanager
def running(run_id: str) -> Iterator[None]:
    """Within the block ``run_id`` trains: an interruption there names it (``Interrupted.run``),
    so the message can say which run to continue."""
    try:
        yield
    except KeyboardInterrupt as exc:  # Interrupted, or a Ctrl-C no handler of ours turned
        if getattr(exc, "run", None) is None:
            exc.run = run_id  # type: ignore[attr-defined]
        raise


def interrupted_by(exc: BaseException) -> int:
    """The exit code for an interruption: 128 + its signal's number (130 for Ctrl-C)."""
    return exc.exit_code if isinstance(exc, Interrupted) else 128 + signal.SIGINT


__all__ = [
    "SIGNALS",
    "Interrupted",
    "check",
    "deferred",
    "interrupted_by",
    "interruptible",
    "running",
]
