"""The perturbation test on token inputs: a removed token is masked out (as padding is), which
for a model without positions is exactly deleting it; on a trained token classifier, removing
the relevant tokens hurts more than removing the irrelevant ones, padding included."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import archlab
from archlab.cli.main import cli
from archlab.registry import Registry
from archlab.runners.config import TrainConfig
from archlab.runners.explain_eval import evaluate_run, perturbation_auc
from archlab.runners.train import TrainReport, run_model_and_data, train

KEYS = (1, 2, 3)  # the label is which of these tokens the sequence holds


def _data(path: Path, n: int = 480, seed: int = 0) -> Path:
    """Rows of 6..12 filler tokens (4..31), one key token at a random real place; the rest pad."""
    rng = np.random.default_rng(seed)
    x = rng.integers(4, 32, (n, 12))
    lengths = rng.integers(6, 13, n)
    mask = np.arange(12)[None, :] < lengths[:, None]
    y = np.arange(n) % 3
    x[np.arange(n), rng.integers(0, lengths)] = np.asarray(KEYS)[y]
    x[~mask] = 0
    np.savez(path, x=x, y=y, ids_mask=mask)
    return path


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, token_classifier: Callable[..., dict[str, Any]]
) -> Iterator[tuple[Registry, TrainReport]]:
    tmp = tmp_path_factory.mktemp("perturb-tokens")
    registry = Registry(f"sqlite:///{tmp / 'r.db'}", artifacts=tmp / "artifacts")
    source = f"npz:{_data(tmp / 'keys.npz')}"
    config = TrainConfig(data=source, epochs=12, batch_size=32, lr=3e-3, warmup=0.5)
    yield registry, train(token_classifier(depth=2), config, registry)
    registry.close()


def test_a_masked_token_is_a_deleted_token_for_a_model_without_positions(
    token_classifier: Callable[..., dict[str, Any]],
) -> None:
    torch.manual_seed(0)
    model = archlab.compile_spec(token_classifier(depth=2)).eval()
    ids = torch.randint(4, 32, (1, 8))
    keep = torch.tensor([[True, True, False, True, True, False, True, True]])
    with torch.no_grad():
        masked = model(ids=ids, ids_mask=keep)
        deleted = model(ids=ids[keep][None])
    torch.testing.assert_close(masked, deleted, rtol=1e-5, atol=1e-6)


def test_removing_the_relevant_tokens_hurts_more_than_removing_the_irrelevant(
    trained: tuple[Registry, TrainReport],
) -> None:
    registry, report = trained
    loaded = run_model_and_data(report.runs[0], registry)
    data = loaded.data.subset(loaded.rows)
    assert "ids_mask" in data.inputs and not bool(data.inputs["ids_mask"].all())
    results = perturbation_auc(loaded.model, data, ["attention", "generic", "chefer"])
    for method, result in results.items():
        plain = result["accuracy_pos"][0]
        assert plain == result["accuracy_neg"][0] > 0.8, method  # the task is learnt
        assert all(0.0 <= a <= 1.0 for a in result["accuracy_pos"] + result["accuracy_neg"])
    for method in ("generic", "chefer"):  # raw attention need not be faithful: not asserted
        result = results[method]
        # the key token is one of 6..12: when the method finds it, it goes at the first step
        # of positive removal and never under negative removal (one token always stays)
        assert result["auc_pos"] < result["auc_neg"] - 0.4, (method, result)
        assert result["accuracy_pos"][1] < 0.7 and min(result["accuracy_neg"]) > 0.95, method


def test_token_batches_give_what_one_batch_gives_and_the_eval_run_is_recorded(
    trained: tuple[Registry, TrainReport],
) -> None:
    registry, report = trained
    loaded = run_model_and_data(report.runs[0], registry)
    data = loaded.data.subset(loaded.rows[:40])
    whole = perturbation_auc(loaded.model, data, ["rollout", "generic"], batch_size=64)
    assert perturbation_auc(loaded.model, data, ["rollout", "generic"], batch_size=7) == whole
    out = evaluate_run(report.runs[0], None, ["generic"], registry)
    run = registry.get(out["run"])
    assert run.kind == "eval" and run.tags["evaluates"] == report.runs[0]
    assert set(run.metrics) == {"auc_pos_generic", "auc_neg_generic"}
    url = str(registry.url)
    args = ["explain", report.runs[0], "--evaluate", "perturbation", "--registry", url]
    result = CliRunner().invoke(cli, [*args, "--method", "chefer"])
    assert result.exit_code == 0, result.output
    assert "chefer" in result.output and "auc" in result.output.lower()
