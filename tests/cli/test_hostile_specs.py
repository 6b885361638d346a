"""Hostile spec files through ``arch validate`` and ``arch compile``: exit 2 with a message."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from archlab.cli import cli

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
