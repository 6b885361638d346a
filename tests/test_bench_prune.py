"""Smoke test of bench/prune_bench.py: it runs end to end on tiny sizes. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "bench" / "prune_bench.py"


def test_prune_bench_quick_runs(tmp_path: Path) -> None:
    out = tmp_path / "prune.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("DeiT-S (dense)", "DynamicViT 0.7", "EViT 0.7", "ToMe r=8"):
        assert name in proc.stdout
    results = json.loads(out.read_text())["results"]
    assert sorted(results) == ["1", "2"]
    for rows in results.values():
        assert [r["key"] for r in rows] == ["dense", "dynamicvit", "evit", "tome"]
        assert all(r["img_per_s"] > 0 for r in rows)


def test_prune_bench_train_mode_quick_runs(tmp_path: Path) -> None:
    out = tmp_path / "train.json"
    proc = subprocess.run(
        [
            *(sys.executable, str(SCRIPT), "--mode", "train", "--quick", "--threads", "1"),
            *("--iters", "1", "--json", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "reference policy attention" in proc.stdout
    payload = json.loads(out.read_text())
    assert payload["meta"]["mode"] == "train"
    rows = payload["results"]["2"]
    assert [r["key"] for r in rows] == ["dense", "dynamicvit", "dynamicvit-reference"]
    assert all(r["median_s"] > 0 for r in rows)
    fast, reference = rows[1]["loss"], rows[2]["loss"]  # the same Gumbel draws
    assert abs(fast - reference) <= 1e-5 * abs(reference)
