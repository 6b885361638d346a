"""Smoke tests of bench/peers.py: it runs end to end on tiny sizes. No timing is asserted."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "bench" / "peers.py"


def run_peers(tmp_path: Path, *workloads: str, extra: tuple[str, ...] = ()) -> tuple[str, dict]:
    out = tmp_path / "peers.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--json", str(out)]
    proc = subprocess.run(
        [*command, *extra, "--only", *workloads],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def check_rows(stdout: str, payload: dict, workloads: tuple[str, ...]) -> None:
    rows = payload["rows"]
    assert [(r["mode"], r["key"]) for r in rows] == [
        (mode, key) for key in workloads for mode in ("infer", "train")
    ]
    for r in rows:
        assert r["outputs"].startswith("outputs match"), r
        assert r["archlab_ms"] > 0 and r["peer_ms"] > 0
        assert f"| {r['workload']} | {r['peer']} |" in stdout
    assert "## infer" in stdout and "## train" in stdout
    assert stdout.count("outputs match") == len(rows)


def test_peers_quick_transformer_encoder(tmp_path: Path) -> None:
    """The nn.TransformerEncoder rows need nothing beyond torch."""
    workloads = ("encoder-deit-s", "encoder-bert")
    stdout, payload = run_peers(tmp_path, *workloads)
    check_rows(stdout, payload, workloads)
    assert "nn.TransformerEncoder (fast path" in stdout
    assert sum(line.startswith("target: ") for line in stdout.splitlines()) == 2


def test_peers_quick_frozen(tmp_path: Path) -> None:
    """--freeze: a frozen archlab model timed beside archlab and the peer, its outputs checked;
    a workload whose peer does not import keeps a frozen-against-unfrozen row."""
    workloads = ("encoder-deit-s", "encoder-bert", "vit-s16")
    stdout, payload = run_peers(tmp_path, *workloads, extra=("--freeze", "--mode", "infer"))
    rows = {r["key"]: r for r in payload["rows"]}
    assert payload["meta"]["freeze"] and set(rows) == set(workloads)
    assert "| frozen ms | frozen ratio (peer/frozen) | frozen paired |" in stdout
    for r in rows.values():
        assert r["mode"] == "infer" and r["frozen_ms"] > 0 and r["frozen_gain"] > 0
        assert "outputs match" in r["frozen_outputs"], r
        report = r["frozen_report"]
        assert report["device"] == "cpu" and report["packed"] > 0, report
        assert report["fused"] == 12, report  # every block's fc1 + GELU
    for key in ("encoder-deit-s", "encoder-bert"):
        r = rows[key]
        assert r["frozen_outputs"].startswith("outputs match"), r
        assert (
            r["frozen_ratio"] > 0
            and r["frozen_paired"] > 0
            and r["outputs"].startswith("outputs match")
        )
        assert f"target: {r['workload']} frozen >= 1.5x" in stdout
    vit = rows["vit-s16"]
    if vit["peer"].startswith("none: "):  # timm does not import: frozen against unfrozen only
        assert vit["frozen_ratio"] is None and vit["peer_ms"] == 0
        assert vit["frozen_outputs"].startswith("against archlab unfrozen: outputs match")
    else:
        assert vit["frozen_outputs"].startswith("outputs match") and vit["frozen_ratio"] > 0


def importable(package: str) -> None:
    """Skip unless ``package`` imports (timm raises RuntimeError with a mismatched torchvision)."""
    try:
        importlib.import_module(package)
    except Exception as exc:
        pytest.skip(f"{package} does not import: {type(exc).__name__}: {exc}")


@pytest.mark.slow
def test_peers_quick_timm_and_hf(tmp_path: Path) -> None:
    """The timm and HF transformers rows, when those packages import (the bench extra)."""
    importable("timm")
    importable("transformers")
    workloads = ("vit-s16", "vit-b16", "bert-base", "gpt2-small")
    stdout, payload = run_peers(tmp_path, *workloads)
    check_rows(stdout, payload, workloads)
    assert payload["meta"]["timm"] and payload["meta"]["transformers"]
