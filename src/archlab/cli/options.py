"""Options several commands share, declared once: ``--device``, ``--threads``."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class Device(click.ParamType):
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``: the same spelling on every command."""

    name = "device"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value).strip().lower()
        if not _DEVICE.fullmatch(text):
            self.fail(
                f"unknown device {value!r}; use auto (CUDA when there is one), cpu, cuda or "
                "cuda:N (the N-th GPU, from 0)",
                param,
                ctx,
            )
        return text

    def get_metavar(self, param: click.Parameter, *args: Any, **kwargs: Any) -> str:
        return "[auto|cpu|cuda|cuda:N]"


DEVICE = Device()


def device_option(default: str | None, help: str) -> Callable[[F], F]:
    return click.option(
        "--device",
        type=DEVICE,
        default=default,
        show_default=default is not None,
        help=help,
    )


def threads_option(f: F) -> F:
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help="CPU threads for torch [default: the CPUs this process may use: its affinity mask, "
        "capped by its cgroup's CPU quota; OMP_NUM_THREADS when set]. Recorded in the run.",
    )(f)
