"""The shape of the source tree that architecture.md promises, checked on every run.

Three habits that keep archlab readable as it grows: no source file over about 800 lines (the
ORM models and the migrations are tables, not logic, and are left out), no function over about
100 lines, and no private name (``_x``) imported from another package: what a package offers the
others is public and documented. The import directions themselves are import-linter contracts
in ``pyproject.toml`` (``make lint``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "archlab"

MAX_FILE_LINES = 800
MAX_FUNCTION_LINES = 100
#: Tables rather than logic: the ORM models and the migrations' DDL.
EXEMPT = ("registry/models.py", "registry/migrations/")


def _sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if not str(p.relative_to(SRC)).startswith(EXEMPT))


def _package(module: str) -> str:
    """The top-level part of archlab a module belongs to (``archlab.compiler.nn.x`` -> compiler)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_of(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_the_tree_is_there() -> None:
    assert len(_sources()) > 50  # a moved SRC would make every check below pass vacuously


def test_no_source_file_is_over_the_limit() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in _sources()
        if (n := p.read_text().count("\n")) > MAX_FILE_LINES
    }
    assert not long, f"split these files along their seams (over {MAX_FILE_LINES} lines): {long}"


def test_no_function_is_over_the_limit() -> None:
    long = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(SRC)}:{node.lineno} {node.name}"] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_private_name_crosses_a_package() -> None:
    crossings = []
    for path in SRC.rglob("*.py"):
        here = _module_of(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if not node.module.startswith("archlab.") or node.module == "archlab._version":
                continue
            if _package(node.module) == _package(here):
                continue
            private = [a.name for a in node.names if a.name.startswith("_")]
            private += [p for p in node.module.split(".")[1:] if p.startswith("_")]
            if private:
                crossings.append(f"{here} imports {node.module}: {', '.join(private)}")
    assert not crossings, "make these public where they are defined:\n" + "\n".join(crossings)


@pytest.mark.parametrize(
    ("module", "package"),
    [("archlab.compiler.nn.attention", "compiler"), ("archlab", ""), ("archlab.errors", "errors")],
)
def test_package_of_a_module(module: str, package: str) -> None:
    assert _package(module) == package


#: The modules architecture.md's "Layout" names (web/ arrives with its issue).
LAYOUT = [
    "_version.py",
    "errors.py",
    "files.py",
    "metrics.py",
    "specs/models.py",
    "specs/load.py",
    "specs/errors.py",
    "specs/schema.py",
    "specs/upgrade.py",
    "specs/canonical.py",
    "specs/overrides.py",
    "specs/analysis/",
    "compiler/model.py",
    "compiler/builders.py",
    "compiler/codegen.py",
    "compiler/cost.py",
    "compiler/flops.py",
    "compiler/summary.py",
    "compiler/paths.py",
    "compiler/render.py",
    "compiler/devices.py",
    "compiler/nn/",
    "compiler/nn/pruning/",
    "registry/models.py",
    "registry/records.py",
    "registry/engine.py",
    "registry/migrate.py",
    "registry/provenance.py",
    "registry/store.py",
    "registry/handle.py",
    "registry/artifacts.py",
    "registry/summaries.py",
    "registry/views.py",
    "registry/prepared.py",
    "registry/query/",
    "runners/train.py",
    "runners/trainer.py",
    "runners/data/",
    "runners/splits.py",
    "runners/mixup.py",
    "runners/optim.py",
    "runners/distributed.py",
    "runners/benchmark.py",
    "runners/lifecycle.py",
    "viz/",
    "cli/main.py",
    "cli/options.py",
    "cli/formatting.py",
]


@pytest.mark.parametrize("entry", LAYOUT)
def test_the_layout_of_architecture_md(entry: str) -> None:
    path = SRC / entry
    assert (path / "__init__.py").is_file() if entry.endswith("/") else path.is_file(), entry


def test_the_compiler_nn_contract_names_every_other_compiler_module() -> None:
    # import-linter's forbidden list is explicit: a new compiler module must join it, or
    # compiler.nn could start importing it unnoticed
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (nn,) = [c for c in contracts if c["source_modules"] == ["archlab.compiler.nn"]]
    modules = {
        f"archlab.compiler.{p.stem if p.is_file() else p.name}"
        for p in (SRC / "compiler").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert set(nn["forbidden_modules"]) == modules - {"archlab.compiler.nn"}


def test_test_file_names_are_unique() -> None:
    # test folders have no __init__.py: pytest imports test files by basename, so two files of
    # one name in different folders stop the whole run at collection
    names: dict[str, list[str]] = {}
    for path in (SRC.parents[1] / "tests").rglob("test_*.py"):
        names.setdefault(path.name, []).append(str(path.relative_to(SRC.parents[1])))
    assert not {n: p for n, p in names.items() if len(p) > 1}
