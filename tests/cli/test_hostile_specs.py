"""Hostile spec files through ``arch validate`` and ``arch compile``: exit 2 with a message."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from click.testing import CliRunner

from archlab.cli import cli
from archlab.textsafe import printable

ROOT = Path(__file__).parents[2]
GPT = ROOT / "specs" / "gpt-tiny.json"


def gpt_text() -> str:
    return GPT.read_text(encoding="utf-8")


# (file name, bytes, what the message says)
HOSTILE = [
    (
        "deep.json",
        ('{"version": 1, "name": ' + "[" * 100_000 + "]" * 100_000 + "}").encode(),
        "nested too deeply",
    ),
    (
        "digits.json",
        gpt_text().replace('"vocab_size": 256', '"vocab_size": ' + "9" * 4301).encode(),
        "a JSON number with more than 4300 digits",
    ),
    (
        "surrogate.json",
        gpt_text().replace('"name": "gpt-tiny"', '"name": "gpt\\ud800"').encode(),
        "name: text holds a lone UTF-16 surrogate",
    ),
    (
        "latin1.json",
        gpt_text().replace('"gpt-tiny"', '"gpt-\xff"').encode("latin-1"),
        "not UTF-8 text: byte 0xff at line",
    ),
]


@pytest.mark.parametrize("command", ["validate", "compile"])
@pytest.mark.parametrize(("name", "content", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_spec_files_exit_2_with_a_message(
    tmp_path: Path, command: str, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    result = CliRunner().invoke(cli, [command, str(path)])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_a_utf8_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + gpt_text().encode())
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0, result.stderr


# ------------------------------------------------------------------------ sizes past the machine


def sized(path: Path, **changes: Any) -> Path:
    """gpt-tiny with ``inputs.ids`` / ``nodes.tok`` fields changed, written to ``path``."""
    doc = json.loads(gpt_text())
    doc["inputs"]["ids"].update(changes.get("ids", {}))
    doc["nodes"]["tok"].update(changes.get("tok", {}))
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


@pytest.fixture
def eight_gib(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host has 8 GiB available, whatever this machine has."""
    from archlab.compiler import memory

    monkeypatch.setattr(memory, "host_memory", lambda: (8 * 2**30, "a test's figure"))


HUGE = {
    "dim-1e9": {"tok": {"dim": 10**9}},
    "vocab-2^31-1": {"ids": {"vocab_size": 2**31 - 1}},
}


def _peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.usefixtures("eight_gib")
@pytest.mark.parametrize("case", sorted(HUGE))
def test_compile_refuses_a_model_larger_than_memory_before_allocating(
    tmp_path: Path, case: str
) -> None:
    import archlab.compiler.model  # noqa: F401  (torch imported before the clock starts)

    path = sized(tmp_path / "huge.json", **HUGE[case])
    rss = _peak_rss_bytes()
    started = time.perf_counter()
    result = CliRunner().invoke(cli, ["compile", str(path)])
    assert time.perf_counter() - started < 5
    assert _peak_rss_bytes() - rss < 2**30  # nothing near the model's size was allocated
    assert result.exit_code == 2, result.output
    assert "more than the 8.6 GB available (a test's figure)" in result.stderr
    assert "--max-params N" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.usefixtures("eight_gib")
@pytest.mark.parametrize("case", sorted(HUGE))
def test_validate_accepts_a_huge_spec_and_warns(tmp_path: Path, case: str) -> None:
    path = sized(tmp_path / "huge.json", **HUGE[case])
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "ok  " in result.stdout
    assert "warning: " in result.stderr and "arch compile will refuse it" in result.stderr


@pytest.mark.usefixtures("eight_gib")
def test_max_params_is_the_limit_when_given(tmp_path: Path) -> None:
    path = sized(tmp_path / "huge.json", ids={"vocab_size": 2**31 - 1})
    result = CliRunner().invoke(cli, ["compile", str(path), "--max-params", "1000000"])
    assert result.exit_code == 2
    assert "more than --max-params 1,000,000" in result.stderr
    # a normal spec under the limit compiles
    result = CliRunner().invoke(cli, ["compile", str(GPT), "--max-params", "2000000", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["params"] == 1_089_152


@pytest.mark.usefixtures("eight_gib")
def test_a_zoo_spec_still_compiles_and_validates_quietly() -> None:
    result = CliRunner().invoke(cli, ["compile", str(GPT), "--json"])
    assert result.exit_code == 0, result.stderr
    result = CliRunner().invoke(cli, ["validate", str(GPT)])
    assert result.exit_code == 0 and "warning" not in result.stderr


@pytest.mark.usefixtures("eight_gib")
def test_a_forward_pass_too_large_is_refused(tmp_path: Path) -> None:
    """A 10^6 x 10^6 image has few parameters without a learned position table, but its input
    alone is terabytes: the build succeeds, the test forward pass is refused."""
    doc = json.loads((ROOT / "specs" / "vit-tiny-digits.json").read_text(encoding="utf-8"))
    doc["inputs"]["image"]["size"] = 10**6
    del doc["nodes"]["pos"]
    doc["nodes"]["encoder"]["input"] = "cls"
    path = tmp_path / "image.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    result = CliRunner().invoke(cli, ["compile", str(path)])
    assert result.exit_code == 2, result.output
    assert "skip it with --no-forward" in result.stderr
    assert CliRunner().invoke(cli, ["compile", str(path), "--no-forward"]).exit_code == 0


# ---------------------------------------------------------------------- names that are not text

HOSTILE_NAME = '[/bold][red]evil\x1b[31mRED\x1b]0;title\x07\n<script>alert("x")</script>\\\u202eend'


def _no_controls(text: str) -> None:
    """Nothing but printable characters and line breaks reached the output."""
    for line in text.splitlines():
        assert line.isprintable(), repr(line)


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    doc = json.loads(gpt_text())
    doc["name"] = HOSTILE_NAME
    path = tmp_path / "name\x1b[2J.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_compile_and_validate_print_names_and_paths_escaped(hostile: Path) -> None:
    result = CliRunner().invoke(cli, ["compile", str(hostile), "--no-forward"])
    assert result.exit_code == 0, result.output
    _no_controls(result.stdout)
    flat = "".join(line.strip() for line in result.stdout.splitlines())
    assert "[/bold][red]evil\\x1b[31mRED\\x1b]0;title\\x07\\n<script>" in flat
    result = CliRunner().invoke(cli, ["validate", str(hostile)])
    assert result.exit_code == 0
    _no_controls(result.stdout)
    assert "name\\x1b[2J.json" in result.stdout


def test_spec_errors_show_keys_and_paths_escaped(tmp_path: Path) -> None:
    doc = json.loads(gpt_text())
    doc["nodes"]["tok"]["\x1b[2Jdim"] = 1
    path = tmp_path / "bad\x07.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    _no_controls(result.stderr)
    assert "bad\\x07.json" in result.stderr
    assert "nodes.tok.\\x1b[2Jdim: unknown key" in result.stderr


def test_compile_refusal_shows_the_name_escaped(tmp_path: Path, eight_gib: None) -> None:
    doc = json.loads(gpt_text())
    doc["name"] = HOSTILE_NAME
    doc["inputs"]["ids"]["vocab_size"] = 2**31 - 1
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    result = CliRunner().invoke(cli, ["compile", str(path)])
    assert result.exit_code == 2
    _no_controls(result.stderr)
    assert "evil\\x1b[31m" in result.stderr


DOT_STRING = r'"(?:[^"\\]|\\.)*"'


def test_graph_dot_escapes_the_name(hostile: Path) -> None:
    result = CliRunner().invoke(cli, ["graph", str(hostile)])
    assert result.exit_code == 0, result.output
    _no_controls(result.stdout)
    lines = result.stdout.splitlines()
    header = re.fullmatch(rf"digraph ({DOT_STRING}) \{{", lines[0])
    assert header is not None, lines[0]
    # the DOT string reads back as the printable name
    name = re.sub(r"\\(.)", r"\1", header.group(1)[1:-1])
    assert name == printable(HOSTILE_NAME)
    # every other line is a statement of the graph, as for a spec with a plain name
    plain = CliRunner().invoke(cli, ["graph", str(GPT)]).stdout.splitlines()
    assert lines[1:] == plain[1:]


def test_graph_mermaid_holds_no_user_text(hostile: Path) -> None:
    result = CliRunner().invoke(cli, ["graph", str(hostile), "--format", "mermaid"])
    assert result.exit_code == 0
    _no_controls(result.stdout)
    assert "<script>" not in result.stdout and "evil" not in result.stdout
    plain = CliRunner().invoke(cli, ["graph", str(GPT), "--format", "mermaid"]).stdout
    assert result.stdout == plain


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot")
def test_graph_svg_escapes_the_name(hostile: Path, tmp_path: Path) -> None:
    out = tmp_path / "g.svg"
    result = CliRunner().invoke(cli, ["graph", str(hostile), "-o", str(out)])
    assert result.exit_code == 0, result.output
    svg = out.read_text(encoding="utf-8")
    assert "<script>" not in svg
    ElementTree.fromstring(svg)  # well-formed XML
