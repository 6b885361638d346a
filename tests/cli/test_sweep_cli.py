"""arch sweep, arch sweep show and arch runs pareto end to end; bad sweep files exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from archlab.cli import cli
from archlab.registry import Registry

pytest.importorskip("optuna")

VIT = Path(__file__).parents[2] / "specs/vit-tiny-digits.json"


def arch(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, str]:
    rng = np.random.default_rng(0)
    x = rng.random((60, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(60) % 3)
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs/v.json").write_text(VIT.read_text())
    doc = {
        "base": "specs/v.json",
        "space": {"nodes.encoder.depth": {"int": [1, 3]}, "train.mixup": {"choice": [0.0, 0.2]}},
        "objectives": {"val_acc": "max", "flops": "min"},
        "budget": {"max_params": 120000},
        "train": {"data": f"npz:{tmp_path / 'd.npz'}", "folds": 2, "epochs": 1},
        "trials": 3,
    }
    path = tmp_path / "depth.json"
    path.write_text(json.dumps(doc))
    return path, f"sqlite:///{tmp_path / 'r.db'}"


def test_sweep_show_and_pareto(files: tuple[Path, str]) -> None:
    path, url = files
    code, out, err = arch("sweep", str(path), "--registry", url, "--trials", "3")
    assert code == 0, err
    assert out.count("trial ") == 3 and "study depth:" in out
    code, out, err = arch("sweep", "show", str(path), "--registry", url, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["study"] == "depth" and len(shown["trials"]) == 3
    assert shown["objectives"] == {"val_acc": "max", "flops": "min"}
    for t in shown["trials"]:
        assert t["state"] in ("COMPLETE", "REJECTED")
        assert (t["state"] == "REJECTED") == (t["params"]["nodes.encoder.depth"] == 3)
    code, out, err = arch("runs", "pareto", "depth", "--registry", url, "--json")
    assert code == 0, err
    groups = {t["group"] for t in shown["trials"] if t["state"] == "COMPLETE"}
    assert {p["group"] for p in json.loads(out)} == groups
    code, out, _ = arch("sweep", "show", "depth", "--registry", url)
    assert code == 0 and "complete" in out


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"trials": 0}, "trials"),
        ({"space": {"nodes.enc.depth": {"int": [1, 2]}}}, "space.nodes.enc.depth"),
        ({"budget": {"max_flop": 1}}, "budget.max_flop"),
        ({"space": {"train.lr": {"log": [0, 1]}}}, "space.train.lr.log.0"),
    ],
)
def test_bad_sweep_files_exit_2_naming_the_path(
    files: tuple[Path, str], change: dict[str, object], path: str
) -> None:
    sweep, url = files
    doc = {**json.loads(sweep.read_text()), **change}
    sweep.write_text(json.dumps(doc))
    code, _, err = arch("sweep", str(sweep), "--registry", url)
    assert code == 2 and f"  {path}: " in err, err


def test_show_of_an_unknown_sweep_exits_2(files: tuple[Path, str]) -> None:
    _, url = files
    Registry(url).close()
    code, _, err = arch("sweep", "show", "nope", "--registry", url)
    assert code == 2 and "no sweep named 'nope'" in err, err
