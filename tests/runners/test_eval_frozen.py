"""``arch eval`` runs the model frozen where the metrics come out the same (the CPU, float32,
no autocast), records which form ran, and ``--no-freeze`` keeps it eager."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from archlab.cli import cli
from archlab.compiler.nn.packed import onednn_problem
from archlab.registry import Registry
from archlab.runners.config import TrainConfig
from archlab.runners.train import evaluate_run, train

VIT = str(Path(__file__).parents[2] / "specs/vit-tiny-digits.json")


@pytest.fixture
def trained(registry: Registry, random_images: Callable[[int, int], str]) -> str:
    config = TrainConfig(epochs=1, batch_size=64, lr=2e-3, data=random_images(96, 3))
    return train(VIT, config, registry).runs[0]


@pytest.mark.skipif(onednn_problem(torch.float32) is not None, reason="no oneDNN here")
def test_eval_freezes_on_the_cpu_and_gets_the_same_metrics(
    registry: Registry, trained: str
) -> None:
    frozen = evaluate_run(trained, registry)
    eager = evaluate_run(trained, registry, freeze=False)
    assert frozen.inference == "frozen: 17 linears packed for oneDNN, 4 fused"
    assert eager.inference == "eager: --no-freeze"
    for name, value in eager.metrics.items():
        assert frozen.metrics[name] == pytest.approx(value, rel=1e-5), name
    assert registry.get(frozen.run).config["inference"] == frozen.inference


def test_eval_no_freeze_on_the_command_line(
    registry: Registry, trained: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    result = CliRunner().invoke(cli, ["eval", trained, "--registry", url, "--no-freeze", "--json"])
    assert result.exit_code == 0, result.output
    assert '"inference": "eager: --no-freeze"' in result.stdout
