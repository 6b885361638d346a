"""The sweep file: its shape checked with JSON paths, points applied to the base spec, budgets
measured from the spec alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from archlab.runners.sweep_file import SweepError, check_budget, load_sweep
from archlab.specs import load_spec

ROOT = Path(__file__).parents[2]
VIT = ROOT / "specs/vit-tiny-digits.json"


def write(tmp_path: Path, **changes: Any) -> Path:
    doc: dict[str, Any] = {
        "base": str(VIT),
        "space": {
            "nodes.encoder.depth": {"int": [1, 4]},
            "train.mixup": {"choice": [0.0, 0.2]},
            "train.lr": {"log": [1e-4, 1e-2]},
        },
        "objectives": {"val_acc": "max"},
        "budget": {"max_params": 1000000},
        "train": {"data": "digits", "folds": 2, "epochs": 1},
        "trials": 4,
    }
    doc.update(changes)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc))
    return path


def problems(path: Path) -> dict[str, str]:
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    return dict(info.value.errors)


def test_the_issue_example_loads_and_applies(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path))
    assert sweep.name == "s" and sweep.model.trials == 4
    variant = sweep.variant({"nodes.encoder.depth": 2, "train.lr": 3e-4, "train.mixup": 0.2})
    assert variant.spec["nodes"]["encoder"]["depth"] == 2
    assert sweep.base_spec["nodes"]["encoder"]["depth"] == 4  # the base is left alone
    assert variant.train == {"data": "digits", "folds": 2, "epochs": 1, "lr": 3e-4, "mixup": 0.2}


def test_a_relative_base_is_read_from_the_sweep_files_folder(tmp_path: Path) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs/v.json").write_text(VIT.read_text())
    assert load_sweep(write(tmp_path, base="specs/v.json")).base_spec["name"] == "vit-tiny-digits"


def test_bad_files_name_every_problem_by_path(tmp_path: Path) -> None:
    found = problems(
        write(
            tmp_path,
            objectives={"val_acc": "maxx"},
            budget={"max_param": 10},
            trials=0,
            space={"train.lr": {"log": [1e-4, "x"]}, "nodes.encoder.depth": {"int": [3, 1]}},
        )
    )
    assert set(found) == {
        "objectives.val_acc", "budget.max_param", "trials", "space.train.lr.log.1",
        "space.nodes.encoder.depth",
    }  # fmt: skip
    assert "did you mean 'max_params'" in found["budget.max_param"]
    assert "low <= high" in found["space.nodes.encoder.depth"]


def test_paths_that_do_not_exist_and_unsweepable_settings(tmp_path: Path) -> None:
    found = problems(
        write(
            tmp_path,
            space={
                "nodes.encodr.depth": {"int": [1, 2]},
                "nodes.encoder.block.attention.heads": {"choice": [2, 4]},
                "train.mixupp": {"choice": [0.0]},
                "train.fold": {"int": [0, 1]},
            },
            train={"data": "digits", "epochs": 1, "cv_group": "x"},
        )
    )
    assert found["space.nodes.encodr.depth"] == "nodes.encodr does not exist in the base spec"
    assert "mixupp" in found["space.train.mixupp"] and "space.train.fold" in found
    assert "train.cv_group" in found and "set folds" in found["train.folds"]
    assert "space.nodes.encoder.block.attention.heads" not in found


def test_objectives_are_metrics_the_training_logs(tmp_path: Path) -> None:
    found = problems(write(tmp_path, objectives={"val_accuracy": "max", "flop": "min"}))
    assert found["objectives.val_accuracy"].startswith("did you mean 'val_acc'?")
    assert found["objectives.flop"].startswith("did you mean 'flops'?")
    load_sweep(write(tmp_path, objectives={"val_loss": "min", "params": "min"}))


def test_a_missing_base_and_a_pruner_with_several_objectives(tmp_path: Path) -> None:
    assert "base" in problems(write(tmp_path, base="nope.json"))
    found = problems(
        write(tmp_path, objectives={"val_acc": "max", "flops": "min"}, pruner="median")
    )
    assert list(found) == ["pruner"]


def test_budget_counts_match_the_compiled_model(tmp_path: Path) -> None:
    from archlab.compiler.model import compile_spec

    sweep = load_sweep(write(tmp_path))
    spec = load_spec(sweep.variant({"nodes.encoder.depth": 2}).spec)
    params, flops, reason = check_budget(spec, sweep.model.budget)
    assert params == sum(p.numel() for p in compile_spec(spec).parameters()) and flops > 0
    assert reason is None
    tight = sweep.model.budget.model_copy(update={"max_flops": flops - 1})
    assert check_budget(spec, tight)[2] == f"{flops:,} FLOPs > max_flops {flops - 1:,}"


def test_without_optuna_the_message_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from archlab.errors import UserInputError
    from archlab.runners.sweep import optuna_module

    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    with pytest.raises(UserInputError, match=r"pip install 'archlab\[sweep\]'"):
        optuna_module()
