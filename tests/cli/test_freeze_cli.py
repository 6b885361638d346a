"""``--freeze`` on the command line: ``arch compile --freeze``, ``arch bench --freeze`` (recorded
with what freezing did), and ``arch eval``, which freezes where the result is the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from archlab.cli import cli
from archlab.compiler.nn.packed import onednn_problem
from archlab.registry import Registry

ROOT = Path(__file__).parents[2]
VIT = str(ROOT / "specs/vit-tiny-digits.json")
FAST = ["--iters", "2", "--warmup", "1"]
needs_onednn = pytest.mark.skipif(
    onednn_problem(torch.float32) is not None, reason=f"oneDNN: {onednn_problem(torch.float32)}"
)


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@needs_onednn
def test_compile_freeze_shows_the_packed_linears_and_saves_the_same_weights(
    tmp_path: Path,
) -> None:
    code, out, err = invoke("compile", VIT, "--freeze", "--json", "-o", str(tmp_path / "f.st"))
    assert code == 0, err
    paths = {p["name"]: p for p in json.loads(out)["paths"]}
    assert paths["frozen linears"]["choice"] == "oneDNN packed"
    assert paths["frozen linears"]["count"] == 17
    assert paths["frozen activations"]["count"] == 4
    assert invoke("compile", VIT, "--json", "-o", str(tmp_path / "e.st"))[0] == 0
    frozen, eager = load_file(tmp_path / "f.st"), load_file(tmp_path / "e.st")
    assert all(torch.equal(frozen[k], eager[k]) for k in eager) and frozen.keys() == eager.keys()

    code, out, _ = invoke("compile", VIT, "--freeze")
    assert code == 0 and "frozen linears" in out and "forward pass ok" in out


def test_compile_freeze_says_why_nothing_was_packed() -> None:
    code, out, err = invoke("compile", VIT, "--freeze", "--dtype", "float64", "--json")
    assert code == 0, err
    [path] = [p for p in json.loads(out)["paths"] if p["name"] == "frozen linears"]
    assert path["choice"] == "F.linear (fallback)" and "float64" in path["reason"]


@needs_onednn
def test_bench_freeze_records_what_freezing_did(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    code, out, err = invoke("bench", VIT, "--device", "cpu", "--batch", "2", *FAST, "--freeze",
                            "--registry", url, "--json")  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["frozen"]["packed"] == 17 and doc["frozen"]["fused"] == 4
    assert doc["rows"][0]["samples_per_s"] > 0
    with Registry(url) as registry:
        [run] = registry.runs(where="kind == 'bench' and config.frozen.packed == 17")
        assert run.id == doc["run"]
    code, out, _ = invoke("bench", VIT, "--device", "cpu", "--batch", "2", *FAST, "--freeze",
                          "--no-record")  # fmt: skip
    assert code == 0 and "frozen 17 linears packed for oneDNN (4 fused" in out


def test_bench_freeze_refuses_train_mode(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    code, out, err = invoke("bench", VIT, "--freeze", "--mode", "train", "--registry", url)
    assert code == 2 and "--freeze makes the model inference-only" in err
    assert "Traceback" not in out + err and not (tmp_path / "registry.db").exists()
