"""Python examples of docs/spec-reference.md about the spec's identity run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def test_node_ids_are_identity_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "docs" / "spec-reference.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    [example] = [b for b in blocks if "node ids are identity" in b]
    monkeypatch.chdir(ROOT)
    lines = example.splitlines()
    checks = [line.split("#")[0].strip() for line in lines if "# True" in line]
    setup = "\n".join(line for line in lines if "# True" not in line)
    namespace: dict[str, object] = {}
    exec(setup, namespace)  # the documented example, as written
    assert len(checks) == 2
    for check in checks:
        assert eval(check, namespace) is True, check
