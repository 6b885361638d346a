"""Signals stop a training at safe points: noted where they land, raised by ``check()``."""

from __future__ import annotations

import os
import signal

import pytest

from archlab.runners.lifecycle import Interrupted, check, interruptible


def _deliver(signum: int) -> None:
    """Send ``signum`` to this process; Python runs the handler before the next bytecode."""
    os.kill(os.getpid(), signum)


def test_a_signal_is_raised_at_the_next_check_not_where_it_lands() -> None:
    """A signal landing inside a library callback (pydantic's validators, torch's hooks) must
    not be raised there, where the exception would be swallowed and training would go on."""
    swallowed = []
    with interruptible():
        try:
            _deliver(signal.SIGTERM)  # where it lands: nothing is raised
        except BaseException as exc:  # pragma: no cover - the failure this test guards against
            swallowed.append(exc)
        assert swallowed == []
        with pytest.raises(Interrupted) as caught:
            check()
        assert caught.value.exit_code == 128 + signal.SIGTERM
        check()  # raised once: a later check is quiet
        _deliver(signal.SIGINT)  # after the interruption was raised: ignored
        check()


def test_a_second_signal_before_a_safe_point_stops_at_once() -> None:
    with interruptible(), pytest.raises(Interrupted) as caught:
        _deliver(signal.SIGINT)
        _deliver(signal.SIGINT)  # asked twice: raised where it lands
    assert caught.value.exit_code == 130
    check()  # nothing left pending afterwards


def test_handlers_come_back_and_nothing_is_pending_after_the_block() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with interruptible():
        _deliver(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before
    check()  # a signal noted inside the block does not leak out of it
