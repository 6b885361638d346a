"""Signals: how a training process stops when it is asked to.

Ctrl-C (SIGINT) and SIGTERM (what Slurm, Kubernetes and ``kill`` send) both end a training the
same way. Inside ``interruptible()`` a signal is noted, and ``check()`` raises it as an
``Interrupted`` exception at the next safe point: between batches, between evaluation chunks,
between set-up steps. It is never raised where it lands, because an exception raised inside a
library's callback (pydantic's validators, torch's hooks and finalisers) can be swallowed there
with a printed traceback while the training goes on. The run's registry handle records the run
as ``interrupted`` as the exception passes, and the CLI prints one line (how to continue) and
exits with ``128 + the signal's number``: 130 after SIGINT, 143 after SIGTERM.

A second signal before a safe point was reached stops the process at once, wherever it is (for
a set-up step that takes long); once the interruption is raised, later signals are ignored, so
the registry write that records it is not cut short.
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
    pending: int | None = None  # a signal arrived: raised by the next check()
    raised = False  # the interruption was raised: later signals are ignored


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM are noted and raised as ``Interrupted`` by the next
    ``check()`` (a second signal before that raises at once; later ones are ignored until the
    block is left). The previous handlers come back afterwards. Outside the main thread signals
    cannot be handled, and a nested block changes nothing: the block runs as it is."""
    if _State.active or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, _frame: FrameType | None) -> None:
        if _State.raised:
            return
        if _State.pending is None:
            _State.pending = signum
            return
        first, _State.pending, _State.raised = _State.pending, None, True
        raise Interrupted(first)  # asked twice before a safe point: stop now, wherever this is

    previous: dict[int, Any] = {}
    for number in SIGNALS:
        previous[number] = signal.signal(number, handle)
    _State.active, _State.pending, _State.raised = True, None, False
    try:
        yield
    finally:
        _State.active, _State.pending = False, None
        for restored, handler in previous.items():
            # None: the previous handler was not set from Python; the default is the best guess
            signal.signal(restored, signal.SIG_DFL if handler is None else handler)


def check() -> None:
    """Raise the interruption a signal asked for, if one did: call it at safe points."""
    if _State.pending is not None:
        signum, _State.pending, _State.raised = _State.pending, None, True
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
    "interrupted_by",
    "interruptible",
    "running",
]
