"""Smoke test of bench/embed_bench.py: small maps run, and the table and JSON say what ran."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "bench" / "embed_bench.py"


def test_embed_bench_small_maps_and_json(tmp_path: Path) -> None:
    out = tmp_path / "embed.json"
    args = ["--points", "300", "--dim", "8", "--clusters", "3", "--threads", "1"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--only", "pca", "sklearn", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "t-SNE / maps of 300 x 8 (3 clusters), 1 thread;" in proc.stdout
    doc = json.loads(out.read_text())
    rows = {row["implementation"]: row for row in doc["maps"]}
    assert list(rows) == ["pca", "sklearn"]
    assert rows["pca"]["within_target"] is None and rows["sklearn"]["within_target"] is True
    assert rows["sklearn"]["knn_loo_accuracy_2d"] > 0.9  # three well separated clusters
    assert 0.5 < rows["sklearn"]["trustworthiness"] <= 1.0
    assert doc["knn_loo_accuracy_input"] == 1.0 and doc["extraction"] == []


def test_embed_bench_extraction_row(tmp_path: Path) -> None:
    out = tmp_path / "extraction.json"
    args = ["--only", "extraction", "--repeats", "1", "--threads", "1"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--extraction-models", "vit-tiny-digits",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "embedding extraction (embed_rows) against the plain forward" in proc.stdout
    [row] = json.loads(out.read_text())["extraction"]
    assert row["model"] == "vit-tiny-digits" and row["samples"] == 1797
    assert row["embed_samples_per_s"] > 0 and row["forward_samples_per_s"] > 0
