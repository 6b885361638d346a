"""``resolve_device`` (one reading of a device for compile, bench and train) and ``device_name``,
on a machine with no GPU and, through torch.cuda's answers, on one with two."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from archlab.compiler import devices
from archlab.compiler.devices import DeviceError, device_name, resolve_device
from archlab.errors import UserInputError


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.mark.usefixtures("no_gpu")
def test_without_a_gpu() -> None:
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    for name in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(DeviceError, match=f"device '{name}' was asked for, but torch sees no CUDA device here; use cpu or auto"):  # fmt: skip
            resolve_device(name)


@pytest.mark.usefixtures("two_gpus")
def test_cuda_n_is_checked_against_the_gpus_torch_sees() -> None:
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DeviceError, match=r"device 'cuda:2': this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"):  # fmt: skip
        resolve_device("cuda:2")


def test_a_name_that_is_no_device_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="unknown device 'tpu9'; use auto"):
        resolve_device("tpu9")


def test_the_cpu_is_named_after_its_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU @ 3.00GHz\n")
    real = Path

    def fake(path: str) -> Path:
        return cpuinfo if path == "/proc/cpuinfo" else real(path)

    monkeypatch.setattr(devices, "Path", fake)
    assert device_name(torch.device("cpu")) == "Some CPU @ 3.00GHz"
    cpuinfo.unlink()  # no /proc/cpuinfo (not Linux): the platform's name
    assert device_name(torch.device("cpu"))
