"""The perturbation test (``runners.explain_eval``): its AUC arithmetic, a faithful method beats
its own reversal on a trained digits ViT, batches change nothing, and the eval run is recorded
linked to the training run with a metric per method and direction."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from archlab.metrics import default_direction
from archlab.registry import Registry, RegistryError
from archlab.runners.config import TrainConfig
from archlab.runners.data import TaskData
from archlab.runners.explain import ExplainError
from archlab.runners.explain_eval import auc, evaluate_run, perturbation_auc
from archlab.runners.train import TrainReport, run_model_and_data, train

ROOT = Path(__file__).parents[2]
VIT = ROOT / "specs/vit-tiny-digits.json"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, TrainReport]]:
    """The digits ViT trained for a few epochs (well above chance), in a registry of its own."""
    tmp = tmp_path_factory.mktemp("perturb")
    registry = Registry(f"sqlite:///{tmp / 'r.db'}", artifacts=tmp / "artifacts")
    config = TrainConfig(data="digits", epochs=8, batch_size=64, lr=3e-3, warmup=0.5)
    yield registry, train(VIT, config, registry)
    registry.close()


def test_the_auc_is_the_trapezoid_over_the_removed_fraction_divided_by_its_width() -> None:
    x = [0.0, 0.1, 0.2, 0.3]
    assert auc(x, [1.0, 1.0, 1.0, 1.0]) == pytest.approx(1.0)  # nothing changes: the accuracy
    # trapezoids 0.1 * (1 + 0.5) / 2 + 0.1 * (0.5 + 0.5) / 2 + 0.1 * (0.5 + 0) / 2 = 0.15
    assert auc(x, [1.0, 0.5, 0.5, 0.0]) == pytest.approx(0.15 / 0.3)
    with pytest.raises(ValueError):
        auc([0.0], [1.0])


def test_removing_the_relevant_patches_hurts_more_than_removing_the_irrelevant(
    trained: tuple[Registry, TrainReport],
) -> None:
    registry, report = trained
    loaded = run_model_and_data(report.runs[0], registry)
    data = loaded.data.subset(loaded.rows)
    results = perturbation_auc(loaded.model, data, ["generic", "chefer"])
    for method, result in results.items():
        assert result["x"] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
        assert result["accuracy_pos"][0] == result["accuracy_neg"][0] > 0.3  # unperturbed
        assert result["auc_pos"] < result["auc_neg"], method


def test_batches_give_what_one_batch_gives(trained: tuple[Registry, TrainReport]) -> None:
    registry, report = trained
    loaded = run_model_and_data(report.runs[0], registry, data_source="digits")
    data = loaded.data.subset(list(range(24)))
    methods = ["attention", "rollout", "generic", "chefer"]
    whole = perturbation_auc(loaded.model, data, methods, batch_size=64)
    pieces = perturbation_auc(loaded.model, data, methods, batch_size=7)
    assert pieces == whole


def test_the_eval_run_is_linked_to_the_run_with_a_metric_per_method_and_direction(
    trained: tuple[Registry, TrainReport],
) -> None:
    registry, report = trained
    out = evaluate_run(report.runs[0], None, ["attention", "generic"], registry, fill="mean")
    run = registry.get(out["run"])
    assert run.kind == "eval" and run.status == "completed" and out["examples"] == 360
    assert run.tags["evaluates"] == report.runs[0] == run.config["evaluates"]
    assert run.config["fill"] == "mean" and set(run.config["curves"]) == {"attention", "generic"}
    names = {"auc_pos_attention", "auc_neg_attention", "auc_pos_generic", "auc_neg_generic"}
    assert set(run.metrics) == names
    assert run.metrics["auc_pos_generic"] == pytest.approx(out["results"]["generic"]["auc_pos"])
    assert default_direction("auc_pos_generic") == "max"  # so the evaluation declares it
    with pytest.raises(RegistryError, match="recorded in this registry as 'min'"):
        registry.declare_metrics({"auc_pos_generic": "max"})
    with pytest.raises(RegistryError, match="recorded in this registry as 'max'"):
        registry.declare_metrics({"auc_neg_generic": "min"})


def test_mixed_inputs_and_unknown_methods_are_refused_with_a_message(
    trained: tuple[Registry, TrainReport],
) -> None:
    registry, report = trained
    loaded = run_model_and_data(report.runs[0], registry, data_source="digits")
    data = loaded.data.subset(list(range(4)))
    both = {**data.inputs, "ids": torch.zeros(4, 5).long()}
    mixed: TaskData = dataclasses.replace(data, inputs=both)
    with pytest.raises(ExplainError, match="one image input or the tokens of one token input"):
        perturbation_auc(loaded.model, mixed, ["generic"])
    with pytest.raises(ExplainError, match="choose from attention, rollout, generic, chefer"):
        perturbation_auc(loaded.model, data, ["gradcam"])
    with pytest.raises(ExplainError, match="unknown method"):
        evaluate_run(report.runs[0], "digits", ["gradcam"], registry)
