"""An encoder-decoder trained by ``arch train`` on ``seq2seq:reverse`` reverses sequences it
never saw, decoded greedily and with beam search."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import archlab
from archlab.cli.main import cli
from archlab.registry import Registry
from archlab.runners.data import BOS_ID, FIRST_SYMBOL

ROOT = Path(__file__).parents[2]
LENGTH, SYMBOLS = 5, 6


@pytest.mark.slow
def test_a_trained_transformer_reverses_held_out_sequences(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    data = f"seq2seq:reverse?n=1200&len={LENGTH}&symbols={SYMBOLS}"
    done = CliRunner().invoke(
        cli,
        ["train", str(ROOT / "specs/transformer-tiny.json"), "--data", data,
         "--epochs", "10", "--lr", "3e-3", "--registry", url],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    registry = Registry(url)
    [listed] = registry.runs()
    run = registry.get(listed.id)  # with its artifacts
    checkpoint = [a for a in run.artifacts if a.kind == "checkpoint"][-1]
    model = archlab.load_compiled(registry.artifact_file(run, checkpoint.path)).eval()

    g = torch.Generator().manual_seed(12345)  # not the training data's seed
    src = torch.randint(FIRST_SYMBOL, FIRST_SYMBOL + SYMBOLS, (200, LENGTH), generator=g)
    expected = src.flip(1)
    greedy = model.generate(src=src, start_id=BOS_ID, max_new_tokens=LENGTH)[:, 1:]
    beams = model.generate(src=src, start_id=BOS_ID, max_new_tokens=LENGTH, num_beams=4)[:, 1:]
    for out in (greedy, beams):
        assert float((out == expected).all(dim=1).float().mean()) >= 0.95
