"""What training reads back: the training state of ``--resume`` (weights-only, never unpickling
an object), the best checkpoint of ``arch eval`` and the teacher's (checked against the sha256
the registry recorded), and the permissions of what it writes."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from archlab.cli.main import cli
from archlab.registry import ArtifactError, Registry
from archlab.runners.config import TrainConfig
from archlab.runners.progress import NullProgress
from archlab.runners.train import _load_teacher, evaluate_run, resume, train
from archlab.runners.trainer import STATE_FILE, StateError, load_state

ROOT = Path(__file__).resolve().parents[2]
VIT = ROOT / "specs" / "vit-tiny-digits.json"


@pytest.fixture
def data(random_images: Callable[[int, int], str]) -> str:
    """48 random 8 x 8 images of 10 classes."""
    return random_images(48, 10)


def config(data: str, **changes: Any) -> TrainConfig:
    base: dict[str, Any] = {"epochs": 2, "warmup": 0.5, "batch_size": 16, "data": data}
    return TrainConfig(**{**base, **changes})


class StopAtSecondEpoch(NullProgress):
    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 1:
            raise KeyboardInterrupt


def interrupted(registry: Registry, data: str) -> tuple[str, Path, dict[str, Any]]:
    """A run interrupted after its first epoch: its id, the state it left for --resume, and
    what that state holds."""
    with pytest.raises(KeyboardInterrupt):
        train(VIT, config(data), registry, progress=StopAtSecondEpoch())
    [run] = registry.runs()
    state = registry.artifacts / run.id / STATE_FILE
    assert run.status == "interrupted"
    return run.id, state, torch.load(state, weights_only=True)


class Payload:
    """What a planted state.pt would run when unpickled: here, make a folder."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def test_a_planted_state_with_a_pickled_payload_is_refused_and_never_runs(
    registry: Registry, data: str, tmp_path: Path
) -> None:
    run_id, state, real = interrupted(registry, data)
    marker = tmp_path / "payload-ran"
    torch.save({**real, "epoch": Payload(marker)}, state)
    with pytest.raises(StateError, match=r"refuses to load it, since unpickling it could run"):
        resume(run_id, registry)
    url = str(registry.url)
    result = CliRunner().invoke(cli, ["train", "--resume", run_id, "--registry", url])
    assert result.exit_code == 2, result.output
    assert "mkdir" in result.output and "Traceback" not in result.output
    assert not marker.exists()  # the payload never ran
    assert registry.get(run_id).status == "interrupted"  # refused before the run was reopened


def test_a_damaged_or_foreign_state_is_refused_clearly(
    registry: Registry, data: str, tmp_path: Path
) -> None:
    run_id, state, real = interrupted(registry, data)
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(StateError, match=r"cannot be read .* damaged or truncated"):
        load_state(state)
    torch.save({"epoch": 0}, state)
    with pytest.raises(StateError, match=r"is not a training state archlab wrote .* lacks"):
        load_state(state)
    wrong = dict(real["model"])
    name = next(iter(wrong))
    wrong[name] = torch.zeros(3, 3)
    torch.save({**real, "model": wrong}, state)
    with pytest.raises(StateError, match=rf"tensor '{name}' is \[3, 3\] float32, the spec's"):
        resume(run_id, registry)
    torch.save({**real, "best_state": wrong}, state)  # the best epoch's weights too
    with pytest.raises(StateError, match=rf"tensor '{name}' is \[3, 3\] float32, the spec's"):
        resume(run_id, registry)
    torch.save({**real, "optimizer": {"state": {}, "param_groups": []}}, state)
    with pytest.raises(StateError, match=r"does not fit this run \(ValueError: .*parameter group"):
        resume(run_id, registry)
    torch.save(real, state)  # the genuine state resumes (bit-identity: test_train.py)
    assert resume(run_id, registry).runs == [run_id]
    assert registry.get(run_id).status == "completed"


@pytest.fixture
def trained(registry: Registry, data: str) -> Iterator[tuple[str, Path]]:
    report = train(VIT, config(data, epochs=1), registry)
    [run_id] = report.runs
    [checkpoint] = [a for a in registry.get(run_id).artifacts if a.kind == "checkpoint"]
    yield run_id, registry.artifacts / checkpoint.path


def test_eval_and_a_teacher_refuse_a_checkpoint_changed_since_it_was_recorded(
    registry: Registry, trained: tuple[str, Path]
) -> None:
    run_id, checkpoint = trained
    assert evaluate_run(run_id, registry).examples > 0  # intact: used
    raw = bytearray(checkpoint.read_bytes())
    raw[-4:] = b"\x00\x00\xc0\x7f"  # the last weight becomes NaN: same size, same header
    checkpoint.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match=rf"best\.safetensors of run {run_id} changed"):
        evaluate_run(run_id, registry)
    with pytest.raises(ArtifactError, match="changed since it was recorded"):
        _load_teacher(registry, run_id, torch.device("cpu"))
    result = CliRunner().invoke(cli, ["eval", run_id, "--registry", str(registry.url)])
    assert result.exit_code == 2 and "changed since it was recorded" in result.output
    assert len(registry.runs("kind == 'eval'")) == 1  # only the first, intact evaluation


def test_eval_refuses_a_checkpoint_linked_outside_the_artifact_folder(
    registry: Registry, trained: tuple[str, Path], tmp_path: Path
) -> None:
    run_id, checkpoint = trained
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes(checkpoint.read_bytes())  # identical bytes: only the place is wrong
    checkpoint.unlink()
    checkpoint.symlink_to(outside)
    with pytest.raises(ArtifactError, match="leads outside the artifact folder"):
        evaluate_run(run_id, registry)


def test_checkpoints_and_state_get_the_umasks_permissions(
    tmp_path: Path, data: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # outside a git tree: no uncommitted.diff beside them
    old = os.umask(0o027)
    try:
        with Registry(f"sqlite:///{tmp_path / 'u.db'}", artifacts=tmp_path / "u") as reg:
            [run_id] = train(VIT, config(data, epochs=1), reg).runs
            folder = reg.artifacts / run_id
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    finally:
        os.umask(old)
    assert modes == {"best.safetensors": 0o640, STATE_FILE: 0o640}
