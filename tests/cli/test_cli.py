"""The arch command line: every command, its --help, exit codes, and no traceback on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from archlab.cli import cli

ROOT = Path(__file__).parents[2]
VIT = str(ROOT / "specs/vit-tiny-digits.json")
COMMANDS = ["validate", "compile", "graph", "schema"]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(command: str | None) -> None:
    code, out, _ = run(*([command] if command else []), "--help")
    assert code == 0
    assert "Usage:" in out


def test_validate_ok_and_errors(tmp_path: Path) -> None:
    code, out, _ = run("validate", VIT)
    assert code == 0 and "ok" in out and "spec_hash" in out
    bad = tmp_path / "bad.json"
    spec = json.loads(Path(VIT).read_text())
    spec["nodes"]["encoder"]["block"]["attention"]["heads"] = 7
    spec["nodes"]["encoder"]["block"]["attention"]["hedas"] = 1
    bad.write_text(json.dumps(spec))
    code, _, err = run("validate", VIT, str(bad))
    assert code == 2
    assert "nodes.encoder.block.attention.hedas: unknown key 'hedas'; did you mean 'heads'?" in err
    assert "Traceback" not in err


def test_validate_every_problem_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    spec = json.loads(Path(VIT).read_text())
    spec["nodes"]["encoder"]["block"]["attention"]["heads"] = 7
    spec["nodes"]["patches"]["patch_size"] = 3
    bad.write_text(json.dumps(spec))
    code, _, err = run("validate", str(bad))
    assert code == 2
    assert "nodes.patches.patch_size: patch size 3 does not divide the image height 8" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"version": 1,\n  "inputs": }', "invalid JSON at line 2, column 13"),
        ("[1, 2]", "a spec is a JSON object"),
        ('{"version": 9}', "version 9 is newer"),
    ],
)
def test_bad_files_exit_2(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "spec.json"
    path.write_text(content)
    for command in ("validate", "compile", "graph"):
        code, _, err = run(command, str(path))
        assert code == 2, (command, err)
        assert message in err
        assert "Traceback" not in err


def test_missing_file_exits_2(tmp_path: Path) -> None:
    code, _, err = run("compile", str(tmp_path / "nope.json"))
    assert code == 2 and "no such file" in err


def test_compile_table(tmp_path: Path) -> None:
    code, out, _ = run("compile", VIT)
    assert code == 0, out
    for text in ("encoder", "params", "202,186", "MACs", "forward pass ok", "(2, 10)", "sdpa"):
        assert text in out


def test_compile_json_is_the_summary() -> None:
    code, out, _ = run("compile", VIT, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["params"] == 202_186
    assert doc["flops"] > 0 and doc["macs"] == doc["flops"] // 2
    assert [n["id"] for n in doc["nodes"]][:2] == ["patches", "cls"]
    assert doc["forward"]["outputs"] == {"head": [2, 10]}


def test_compile_saves_weights_and_code(tmp_path: Path) -> None:
    import archlab

    path = tmp_path / "vit.safetensors"
    code, out, _ = run("compile", VIT, "-o", str(path), "--show-code", "--no-forward")
    assert code == 0, out
    assert "def forward(self, image)" in out
    model = archlab.load_compiled(path)
    assert model.spec.name == "vit-tiny-digits"


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--device", "tpu9"], "unknown device 'tpu9'"),
        (["--dtype", "float8"], "unknown dtype 'float8'"),
    ],
)
def test_compile_bad_options_exit_2(flag: list[str], message: str) -> None:
    code, _, err = run("compile", VIT, *flag)
    assert code == 2 and message in err and "Traceback" not in err


def test_compile_with_a_forced_kernel() -> None:
    code, out, _ = run("compile", VIT, "--attention-kernel", "reference")
    assert code == 0 and "reference" in out and "requested by override" in out


def test_compile_of_a_pruned_spec_shows_tokens_per_stage_and_the_flops_saved() -> None:
    code, out, _ = run("compile", str(ROOT / "specs/dynamicvit-deit-s.json"), "--no-forward")
    assert code == 0, out
    assert "token pruning" in out and "pruning saves 34.8% of the FLOPs" in out
    assert "performance paths" in out and "static keep counts" in out
    for tokens in ("197", "139", "98", "69"):
        assert tokens in out
    code, out, _ = run("compile", str(ROOT / "specs/evit-deit-s.json"), "--json", "--no-forward")
    doc = json.loads(out)
    assert [s["tokens_after"] for s in doc["pruning"]] == [140, 100, 72]
    assert doc["dense_flops"] > doc["flops"] and 0.3 < doc["flops_saved"] < 0.4


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--debug", "compile", VIT, "--dtype", "float8"])
    assert result.exception is not None and type(result.exception).__name__ == "CompileError"


def test_graph_dot_and_mermaid(tmp_path: Path) -> None:
    code, out, _ = run("graph", str(ROOT / "specs/dynamicvit-deit-s.json"))
    assert code == 0 and out.startswith("digraph")
    assert '"encoder.prune.3"' in out and "dynamic, keep 0.7: 197 -> 139 tokens" in out
    code, out, _ = run("graph", VIT, "--format", "mermaid")
    assert code == 0 and out.startswith("flowchart TD")
    target = tmp_path / "g.mmd"
    code, _, _ = run("graph", VIT, "-o", str(target))
    assert code == 0 and target.read_text().startswith("flowchart TD")


def test_graph_picture_needs_graphviz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` anywhere
    code, _, err = run("graph", VIT, "-o", str(tmp_path / "g.svg"))
    assert code == 2 and "apt-get install graphviz" in err
    code, _, err = run("graph", VIT, "-o", str(tmp_path / "g.txt"))
    assert code == 2 and "cannot tell the format" in err


def test_graph_picture_through_graphviz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a `dot` on PATH, SVG and PNG are rendered by it from the DOT text."""
    fake = tmp_path / "dot"
    fake.write_text('#!/bin/sh\necho "rendered $1"\ncat > /dev/null\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    target = tmp_path / "g.svg"
    code, out, _ = run("graph", VIT, "-o", str(target))
    assert code == 0 and "(svg)" in out
    assert target.read_text() == "rendered -Tsvg\n"
    failing = tmp_path / "dot"
    failing.write_text("#!/bin/sh\necho 'syntax error' >&2\nexit 1\n")
    code, _, err = run("graph", VIT, "-o", str(tmp_path / "g.png"))
    assert code == 2 and "Graphviz failed: syntax error" in err


def test_schema() -> None:
    code, out, _ = run("schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["title"].startswith("archlab spec")
    assert "nodes" in schema["properties"]


def test_committed_schema_is_current() -> None:
    from archlab.specs import json_schema

    committed = json.loads((ROOT / "docs/spec.schema.json").read_text())
    assert committed == json_schema(), "run: arch schema -o docs/spec.schema.json"


def _without_torch(code: str) -> subprocess.CompletedProcess[str]:
    """Run Python with ``import torch`` made to fail."""
    prelude = "import sys; sys.modules['torch'] = None\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, env=env, check=False
    )


def test_help_and_validate_import_no_torch() -> None:
    done = _without_torch(
        "from archlab.cli import cli\n"
        "import sys\n"
        f"sys.argv = ['arch', 'validate', {VIT!r}]\n"
        "try:\n    cli(prog_name='arch')\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "sys.argv = ['arch', '--help']\n"
        "try:\n    cli(prog_name='arch')\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
    )
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout and "Usage:" in done.stdout


def test_python_dash_m_archlab() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "archlab", "validate", VIT],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_help_loads_no_graph_library() -> None:
    # `arch --help` (and `import archlab`) analyse no spec: networkx loads with the first analysis
    done = _without_torch(
        "from archlab.cli import cli\n"
        "import sys\n"
        "sys.argv = ['arch', '--help']\n"
        "try:\n    cli(prog_name='arch')\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "assert 'networkx' not in sys.modules\n"
        "import archlab\n"
        f"archlab.load_spec({VIT!r})\n"
        "assert 'networkx' in sys.modules\n"
    )
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout
