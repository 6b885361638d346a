"""Which way a metric improves: ``"min"`` (lower is better) or ``"max"``.

A metric's direction is declared when the registry first records the metric (the writer says it,
as ``arch bench`` does for its latencies and throughputs), and otherwise given by
``default_direction`` from the name. The registry stores it with the metric, and everything that
picks a best value (``Registry.best`` and ``rank``, run summaries, early stopping) reads it there.
"""

from __future__ import annotations

import re
from typing import Literal

from archlab.errors import UserInputError

Direction = Literal["min", "max"]
DIRECTIONS: tuple[Direction, ...] = ("min", "max")

# Words of a name that mean lower is better. A word of the name matches when it is one of these,
# or (the longer ones) starts or ends with one: ``losses``, ``runtime``, ``gflops``, ``nparams``.
_LOWER_WORDS = ("loss", "error", "perplexity", "latency", "time", "memory", "flops", "params")
_LOWER_EXACT = ("err", "ppl", "nll", "mse", "rmse", "mae", "mem")
# Units of time: a name ending in one measures a duration (``step_s``, ``p90_ms``); one after
# ``per`` makes a rate (``items_per_s``), which counts work done, so more is better.
_TIME_UNITS = ("s", "ms", "us", "ns", "sec", "secs", "second", "seconds", "min", "hour")


def default_direction(name: str) -> Direction:
    """The direction of metric ``name`` when its writer declares none: ``"min"`` for losses,
    errors, perplexities, latencies, times (names ending ``_ms`` or ``_s``), memory, FLOPs and
    parameter counts; ``"max"`` for rates per unit of time (``samples_per_s``, ``tokens/s``)
    and everything else (accuracies, throughput).

    The name is read as words split at anything but letters and digits, so ``val_acc`` is
    ``max``, ``val_loss`` and ``latency_p90_ms`` are ``min``, and a word merely containing
    ``err`` or ``time`` inside it (``interrupts``) does not count."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower().replace("/", "_per_")) if w]
    if "per" in words:
        at = words.index("per")
        if at + 1 < len(words) and words[at + 1] in _TIME_UNITS:
            return "max"  # a rate: work per unit of time
    if len(words) > 1 and words[-1] in _TIME_UNITS:
        return "min"  # a duration
    for word in words:
        if word in _LOWER_EXACT or any(
            word.startswith(lower) or word.endswith(lower) for lower in _LOWER_WORDS
        ):
            return "min"
    return "max"


def measures_time(name: str) -> bool:
    """Whether metric ``name`` measures time: a duration (``step_s``, ``latency_p90_ms``) or a
    rate per unit of time (``samples_per_s``, ``tokens/s``). Such a value changes from one run
    of the same computation to the next, so ``arch runs verify`` does not compare it."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower().replace("/", "_per_")) if w]
    at = words.index("per") + 1 if "per" in words else len(words)
    if at < len(words) and words[at] in _TIME_UNITS:
        return True
    return len(words) > 1 and words[-1] in _TIME_UNITS


class DirectionError(UserInputError):
    """A metric direction that is neither ``"min"`` nor ``"max"``."""


def checked_direction(value: object, metric: str) -> Direction:
    """``value`` as a direction for ``metric``, or a ``DirectionError`` saying what is allowed."""
    if value not in DIRECTIONS:
        raise DirectionError(
            f"the direction of metric {metric!r} is 'min' (lower is better) or 'max' (higher is "
            f"better), not {value!r}"
        )
    return value
