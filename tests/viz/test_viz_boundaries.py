"""Package boundaries of the pictures: registry/ never loads matplotlib (nor torch), and viz/
draws plain data without loading a registry, the runners or torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).parents[2] / "src" / "archlab"


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_registry_module_imports_matplotlib() -> None:
    for path in sorted((SRC / "registry").rglob("*.py")):
        bad = sorted(m for m in imported(path) if m.split(".")[0] in ("matplotlib", "torch"))
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_registry_imports_no_matplotlib() -> None:
    code = (
        "import sys, archlab.registry, archlab.registry.series, archlab.cli.main\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'torch'))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_viz_loads_no_registry_runners_or_torch() -> None:
    code = (
        "import sys, archlab.viz, archlab.viz.save, archlab.viz.curves, archlab.viz.patches\n"
        "import archlab.viz.embed, archlab.viz.explain\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'torch')\n"
        "             or m.startswith(('archlab.registry', 'archlab.runners')))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
