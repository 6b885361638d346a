"""``arch prune show RUN`` and ``arch explain RUN`` record their picture as an eval run linked to
RUN (``--no-record`` opts out; a weights file records nothing), and ``--json`` names it.

The registry (module scope) holds one DynamicViT (specs/dynamicvit-tiny-digits.json) trained for
one epoch by ``arch train`` on the first 200 digits (an npz file: a training of seconds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.datasets import load_digits

from archlab import compile_spec
from archlab.cli import cli
from archlab.registry import Registry, Run

ROOT = Path(__file__).parents[2]
DYNAMIC = ROOT / "specs/dynamicvit-tiny-digits.json"


@dataclass(frozen=True)
class Setup:
    root: Path
    registry: str
    trained: str
    data: str
    weights: Path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("picture-records-cli")
    digits = load_digits()
    images = (digits.images[:200] / 16.0).astype("float32")[:, None]
    np.savez(root / "digits200.npz", x=images, y=digits.target[:200])
    data = f"npz:{root / 'digits200.npz'}"
    registry = f"sqlite:///{root / 'r.db'}"
    code, out, err = invoke(
        "train", str(DYNAMIC), "--data", data, "--epochs", "1", "--device", "cpu",
        "--registry", registry, "--json",
    )  # fmt: skip
    assert code == 0, err
    trained = str(json.loads(out)["runs"][0]["id"])
    weights = root / "dynamic.safetensors"
    compile_spec(DYNAMIC, seed=0).save(weights)
    return Setup(root, registry, trained, data, weights)


def eval_runs(setup: Setup) -> list[Run]:
    with Registry(setup.registry, create=False) as reg:
        return [reg.get(r.id) for r in reg.runs("kind == 'eval'")]


def picture(setup: Setup, run: Run, kind: str) -> Path:
    """The file of ``run``'s one artifact of ``kind``, checked to be a readable PNG."""
    (artifact,) = [a for a in run.artifacts if a.kind == kind]
    with Registry(setup.registry, create=False) as reg:
        path = reg.artifact_file(run, artifact.path)
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG"
    return path


def test_prune_show_records_one_eval_run_with_the_kept_patches(setup: Setup) -> None:
    before = {r.id for r in eval_runs(setup)}
    out_png = setup.root / "kept.png"
    code, out, err = invoke(
        "prune", "show", setup.trained, "--images", "2", "-o", str(out_png),
        "--registry", setup.registry, "--json",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    (recorded,) = [r for r in eval_runs(setup) if r.id not in before]
    assert doc["eval_run"] == recorded.id and doc["output"] == str(out_png)
    assert len(doc["indices"]) == 2 and len(doc["stages"]) == 2
    assert recorded.kind == "eval"
    assert recorded.tags == {"evaluates": setup.trained, "evaluation": "prune-show"}
    config = recorded.config
    assert config["evaluates"] == setup.trained and config["evaluation"] == "prune-show"
    assert config["images"] == 2 and config["split"] == "val" and config["examples"] == 2
    assert config["rows"] == doc["indices"] and config["data"] == setup.data
    assert len(config["data_sha256"]) == 64
    assert picture(setup, recorded, "kept-patches").read_bytes() == out_png.read_bytes()
    code, out, err = invoke(
        "prune", "show", setup.trained, "--images", "1", "-o", str(out_png),
        "--registry", setup.registry,
    )  # fmt: skip
    assert code == 0, err
    assert out.rstrip().splitlines()[-1].startswith("recorded as eval run ")


def test_prune_show_no_record_records_nothing(setup: Setup) -> None:
    before = len(eval_runs(setup))
    code, out, err = invoke(
        "prune", "show", setup.trained, "--images", "1", "-o", str(setup.root / "n.png"),
        "--registry", setup.registry, "--no-record",
    )  # fmt: skip
    assert code == 0, err
    assert "recorded as" not in out and len(eval_runs(setup)) == before


def test_explain_records_one_eval_run_with_the_relevance_map(setup: Setup) -> None:
    before = {r.id for r in eval_runs(setup)}
    out_png = setup.root / "maps.png"
    code, out, err = invoke(
        "explain", setup.trained, "--method", "attention", "generic", "--count", "3",
        "-o", str(out_png), "--registry", setup.registry, "--json",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    (recorded,) = [r for r in eval_runs(setup) if r.id not in before]
    assert doc["eval_run"] == recorded.id and recorded.kind == "eval"
    assert recorded.tags == {"evaluates": setup.trained, "evaluation": "explain"}
    config = recorded.config
    assert config["evaluates"] == setup.trained and config["evaluation"] == "explain"
    assert config["methods"] == ["attention", "generic"] and config["count"] == 3
    assert config["indices"] is None and config["target"] is None
    assert config["rows"] == doc["indices"] and config["split"] == "val"
    assert config["data"] == setup.data and config["examples"] == 3
    assert picture(setup, recorded, "relevance-map").read_bytes() == out_png.read_bytes()


def test_explain_no_record_and_a_weights_file_record_nothing(setup: Setup) -> None:
    before = len(eval_runs(setup))
    out_png = setup.root / "quiet.png"
    code, out, err = invoke(
        "explain", setup.trained, "--count", "1", "-o", str(out_png),
        "--registry", setup.registry, "--no-record", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["eval_run"] is None
    code, out, err = invoke(
        "explain", str(setup.weights), "--data", setup.data, "--count", "1", "-o", str(out_png),
        "--registry", setup.registry,
    )  # fmt: skip
    assert code == 0, err
    assert "recorded as" not in out and len(eval_runs(setup)) == before
    code, _, err = invoke(
        "explain", setup.trained, "--evaluate", "perturbation", "--no-record",
        "--registry", setup.registry,
    )  # fmt: skip
    assert code == 2 and "--no-record" in err and len(eval_runs(setup)) == before
