"""Devices: the one reading of a ``--device`` / ``device=`` value, and the one name a machine's
device is recorded under (bench and train runs alike)."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import torch

from archlab.errors import UserInputError


class DeviceError(UserInputError):
    """A device this machine does not have, or a name that is no device."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` (or None: CUDA when torch sees a GPU, else the CPU), ``cpu``, ``cuda`` or
    ``cuda:N``, checked against the GPUs torch sees."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(
            f"unknown device {device!r}; use auto (CUDA when there is one), cpu, cuda or cuda:N "
            "(the N-th GPU, from 0)"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"device {str(device)!r} was asked for, but torch sees no CUDA device here; use cpu "
            "or auto"
        )
    if dev.type == "cuda" and dev.index is not None:
        count = torch.cuda.device_count()
        if dev.index >= count:
            raise DeviceError(
                f"device {str(device)!r}: this machine has {count} CUDA device(s), cuda:0 to "
                f"cuda:{count - 1}"
            )
    return dev


def device_of(module: torch.nn.Module) -> torch.device:
    """Where a module's parameters live (the CPU for a module without any)."""
    first = next(iter(module.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (from /proc/cpuinfo where there is one)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
