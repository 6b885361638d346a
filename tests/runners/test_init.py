"""``arch train --init``: weights matched by name and shape, heads and pruning stages fresh,
everything else refused before anything is recorded."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

import archlab
from archlab.cli.main import cli
from archlab.registry import Registry
from archlab.runners.config import TrainConfig
from archlab.runners.init import InitError, apply_init, init_plan, read_weights, weights_file
from archlab.runners.train import train

ROOT = Path(__file__).resolve().parents[2]
VIT = json.loads((ROOT / "specs" / "vit-tiny-digits.json").read_text())


def vit(**changes: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(VIT))
    for path, value in changes.items():
        node, key = path.split("__")
        doc["nodes"][node][key] = value
    return doc


def saved(tmp_path: Path, doc: dict[str, Any], seed: int = 1) -> Path:
    path = tmp_path / f"w{seed}.safetensors"
    archlab.compile_spec(doc, seed=seed).save(path)
    return path


def test_the_same_architecture_loads_every_tensor(tmp_path: Path) -> None:
    weights, sha = read_weights(saved(tmp_path, VIT))
    model = archlab.compile_spec(VIT, seed=2)
    plan = init_plan(model, weights, "w1", sha)
    assert plan.fresh == () and len(plan.loaded) == len(weights) and len(sha) == 64
    apply_init(model, weights, plan)
    assert all(torch.equal(model.state_dict()[n], weights[n]) for n in plan.loaded)


def test_another_number_of_classes_starts_the_head_fresh(tmp_path: Path) -> None:
    weights, sha = read_weights(saved(tmp_path, vit(head__classes=7)))
    model = archlab.compile_spec(VIT, seed=2)
    before = model.state_dict()["head.fc.weight"].clone()
    plan = init_plan(model, weights, "w1", sha)
    assert plan.fresh and all(name.startswith("head.") for name in plan.fresh)
    apply_init(model, weights, plan)
    state = model.state_dict()
    assert torch.equal(state["patches.proj.weight"], weights["patches.proj.weight"])
    assert torch.equal(state["head.fc.weight"], before)  # left as built


def test_a_pruning_stage_starts_fresh_from_dense_weights(tmp_path: Path) -> None:
    doc = json.loads((ROOT / "specs" / "dynamicvit-tiny-digits.json").read_text())
    dense = json.loads(json.dumps(doc))
    dense["nodes"]["encoder"].pop("prune", None)
    dense["name"] = "dense"
    weights, sha = read_weights(saved(tmp_path, dense))
    plan = init_plan(archlab.compile_spec(doc), weights, "dense", sha)
    assert plan.fresh and all(name.startswith("encoder.prune.") for name in plan.fresh)


def test_other_architectures_are_refused_naming_the_tensors(tmp_path: Path) -> None:
    model = archlab.compile_spec(VIT)
    weights, sha = read_weights(saved(tmp_path, vit(encoder__depth=5)))
    with pytest.raises(InitError, match=r"lacks: encoder\.layers\.4\."):
        init_plan(model, weights, "deeper", sha)
    wider, sha = read_weights(saved(tmp_path, vit(patches__dim=32), seed=3))
    with pytest.raises(
        InitError, match=r"outside the heads.*cls\.tokens \(1, 1, 64\) vs \(1, 1, 32\)"
    ):
        init_plan(model, wider, "narrower", sha)


def test_only_safetensors_files_are_read(tmp_path: Path) -> None:
    pickled = tmp_path / "w.safetensors"
    pickled.write_bytes(pickle.dumps({"patches.proj.weight": torch.zeros(1)}))
    with pytest.raises(InitError, match="not a readable safetensors file"):
        read_weights(pickled)
    with pytest.raises(InitError, match="no such file"):
        weights_file(str(tmp_path / "missing.safetensors"), None)


def test_train_starts_from_a_run_and_records_the_source(registry: Registry, tmp_path: Path) -> None:
    base: dict[str, Any] = {"epochs": 1, "warmup": 0.5, "batch_size": 256, "lr": 1e-3}
    [first] = train(VIT, TrainConfig(**base), registry).runs
    report = train(vit(head__classes=10), TrainConfig(**base, init=first), registry)
    run = registry.get(report.runs[0])
    assert run.config["init"] == first and len(run.config["init_sha256"]) == 64
    assert run.config["init_fresh"] == [] and report.init is not None
    with pytest.raises(InitError, match="no such file or run"):
        train(VIT, TrainConfig(**base, init="nosuchrun"), registry)


def test_arch_train_init_lists_fresh_tensors_and_refuses_misfits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    spec = tmp_path / "vit.json"
    spec.write_text(json.dumps(VIT))
    other = saved(tmp_path, vit(head__classes=7))
    args = ["train", str(spec), "--registry", url, "--epochs", "1", "--batch-size", "256"]
    done = CliRunner().invoke(cli, [*args, "--init", str(other)])
    assert done.exit_code == 0, done.output
    assert "started fresh: head." in done.output
    bad = saved(tmp_path, vit(encoder__depth=2), seed=4)
    refused = CliRunner().invoke(cli, [*args, "--init", str(bad)])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "does not fit this spec" in refused.output
    assert len(Registry(url).runs()) == 1  # the refused training recorded nothing


def test_dynamicvit_from_pretrained_dense_weights(registry: Registry, tmp_path: Path) -> None:
    # the DynamicViT recipe: the dense teacher fine-tunes from the pretrained weights, then the
    # student starts from the teacher with fresh keep predictors
    doc = json.loads((ROOT / "specs" / "dynamicvit-tiny-digits.json").read_text())
    dense = json.loads(json.dumps(doc))
    dense["nodes"]["encoder"].pop("prune")
    pretrained = saved(tmp_path, dense)
    base: dict[str, Any] = {"epochs": 1, "warmup": 0.5, "batch_size": 256, "lr": 1e-3}
    report = train(doc, TrainConfig(**base, init=str(pretrained)), registry)
    student = registry.get(report.runs[0])
    teacher = registry.get(student.config["teacher_run"])
    assert teacher.config["init"] == str(pretrained) == student.config["init"]
    assert all(n.startswith("encoder.prune.") for n in student.config["init_fresh"])
    assert teacher.config["init_fresh"] == [] and student.status == "completed"
