"""Smoke test of bench/attention_bench.py: every row runs and agrees with the dense-mask row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "bench" / "attention_bench.py"


def test_attention_bench_quick_runs_and_outputs_agree(tmp_path: Path) -> None:
    out = tmp_path / "attention.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "archlab (sdpa_mask)" in proc.stdout and "SDPA dense mask" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["shape"]["window"] == 32
    assert all(err <= 1e-4 for err in doc["max_abs_diff"].values())
    assert all(ms > 0 for ms in doc["ms"].values())
