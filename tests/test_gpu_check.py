"""bench/gpu_check.py on the CPU: small versions of a few zoo specs, against float64.

The CPU run checks the script end to end (builds, the float64 copy, the ranking replay of pruned
specs, dynamo's explain, the summary, the exit status); the device run itself needs a GPU.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"
# a ViT with DynamicViT pruning, an encoder-decoder with padding and relative bias, a GQA decoder
# with rotary and a sliding window
SPECS = ["dynamicvit-tiny-digits", "t5-small", "sliding-window-decoder"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--small", "--skip-peers", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        check=False,
    )


def test_gpu_check_passes_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    proc = run("--specs", *SPECS, "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "summary" in proc.stdout
    for name in SPECS:
        assert f"{name} (small)" in proc.stdout
    assert "3/3 passed" in proc.stdout
    assert "peers: skipped" in proc.stdout

    payload = json.loads(out.read_text())
    assert payload["passed"] is True
    assert payload["dtype"] == "float32"
    results = {r["spec"]: r for r in payload["results"]}
    assert sorted(results) == sorted(SPECS)
    for r in results.values():
        assert r["passed"] and r["problems"] == []
        assert r["graph_breaks"] == {"eval": 0, "train": 0}
        assert 0 <= r["max_error"] <= payload["tolerance_table"]["float32"]
    assert set(results["t5-small"]["errors"]) == {"lm_head"}
    kept = results["dynamicvit-tiny-digits"]["kept"]
    assert kept["rankings"] == 2  # one top-k per stage, recorded on the device and replayed
    assert kept["agreement"] == 1.0
    assert [s["device_len"] for s in kept["stages"].values()] == [13, 10]  # CLS + 12, CLS + 9
    assert all(s["same_tokens"] for s in kept["stages"].values())


def test_gpu_check_fails_on_zero_tolerance() -> None:
    """float32 never matches float64 exactly: a zero tolerance must fail, and say so."""
    proc = run("--specs", "vit-tiny-digits", "--tolerance", "0")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "FAIL" in proc.stdout
    assert "above tolerance 0" in proc.stdout
    assert "0/1 passed" in proc.stdout


def test_gpu_check_catches_an_injected_mismatch() -> None:
    """Disturbed device weights must fail the numeric check, pruned specs included."""
    proc = run("--specs", "vit-tiny-digits", "dynamicvit-tiny-digits", "--inject-mismatch")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "0/2 passed" in proc.stdout
    assert proc.stdout.count("above tolerance") >= 2


def test_gpu_check_rejects_unknown_specs() -> None:
    proc = run("--specs", "no-such-spec")
    assert proc.returncode == 2
    assert "unknown spec" in proc.stderr


def _load_script(monkeypatch: pytest.MonkeyPatch) -> Any:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_ranking_judge_tells_near_ties_from_wrong_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu_check = _load_script(monkeypatch)
    ref = torch.tensor([[0.90, 0.50, 0.499, 0.10]], dtype=torch.float64)
    frame = SimpleNamespace(f_locals={"k": 2})  # the stage keeps the top 2

    def judge(device_scores: list[float], device_ranking: list[int]) -> Any:
        replay = gpu_check.RankingReplay()
        values, own = ref.topk(4, dim=1)
        forced = torch.tensor([device_ranking])
        scores = torch.tensor([device_scores], dtype=torch.float64)
        replay._judge(ref, values, own, scores, forced, frame, 1)
        return replay

    # rounding swapped a near-tie (0.500 / 0.499): explained by the scores' own error
    tie = judge([0.90, 0.4985, 0.4995, 0.10], [0, 2, 1, 3])
    assert (tie.unexplained, tie.agreement) == (0, 0.5)
    assert tie.score_error < 2e-3
    # the device kept the worst token although its scores were right: a wrong ranking
    wrong = judge([0.90, 0.50, 0.499, 0.10], [0, 3, 1, 2])
    assert wrong.unexplained == 1
    assert wrong.score_error == 0.0
