"""Loading, checking and shrinking a spec never imports torch (``arch validate`` stays fast and
light; ``small_version`` serves torch-free tooling too)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

SCRIPT = """
import json
import sys
import archlab
import archlab.specs
from archlab.compiler import cost
from archlab.specs.analysis import analyze
from archlab.specs.shrink import small_version

for path in sys.argv[1:]:
    spec = archlab.load_spec(path)
    graph = analyze(spec)
    sum(cost.node_cost(graph, n).params for n in graph.expanded)
    archlab.spec_hash(spec)
    with open(path) as f:
        analyze(archlab.load_spec(small_version(json.load(f))))
archlab.specs.json_schema()
try:
    archlab.load_spec({"version": 1})
except archlab.SpecError:
    pass
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "numpy", "safetensors"))
assert not heavy, heavy
print("ok")
"""


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter at the repository root."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_loading_and_analysing_specs_imports_no_torch() -> None:
    specs = [str(p) for p in sorted(ROOT.glob("specs/*.json"))]
    result = python(SCRIPT, *specs)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize(
    "statement",
    [
        "import archlab.specs.analysis",
        "from archlab import load_spec",
        "from archlab import spec_hash",
        "import archlab; archlab.spec_hash({SPEC!r})",
    ],
)
def test_the_spec_analysis_imports_no_torch(statement: str, minimal_vit) -> None:
    code = statement.replace("{SPEC!r}", repr(minimal_vit()))
    check = "import sys; assert 'torch' not in sys.modules, sorted(sys.modules)"
    result = python(f"{code}; {check}")
    assert result.returncode == 0, result.stderr
