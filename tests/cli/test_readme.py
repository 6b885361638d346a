"""The README's Python snippets run as written.

Every ```python block of README.md runs in a fresh folder (with ``specs/`` beside it and the
registry there), except a block whose first line is a comment ``# needs: gpu`` or
``# needs: network``: those are skipped here, and say so to a reader too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
NEEDS = re.compile(r"#\s*needs:\s*(gpu|network)", re.IGNORECASE)


def _blocks() -> list[tuple[int, str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in BLOCK.finditer(text)]


BLOCKS = _blocks()


def test_the_readme_has_python_snippets() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"README.md:{n}" for n, _ in BLOCKS])
def test_readme_snippet_runs(
    line: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = code.splitlines()[0] if code.strip() else ""
    if NEEDS.search(first):
        pytest.skip(f"README.md:{line} {first.strip()}")
    (tmp_path / "specs").symlink_to(ROOT / "specs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ARCHLAB_REGISTRY", f"sqlite:///{tmp_path / 'registry.db'}")
    monkeypatch.setenv("ARCHLAB_ARTIFACTS", str(tmp_path / "artifacts"))
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})


def test_trace_kept_takes_the_documented_stage_names() -> None:
    import torch

    import archlab
    from archlab.compiler.nn.pruning import TokenTrace

    for doc in (TokenTrace.kept.__doc__ or "", (ROOT / "docs/spec-reference.md").read_text()):
        assert "STACK.prune.LAYER" in doc and "token_prune" in doc
    model = archlab.compile_spec(archlab.load_spec(ROOT / "specs/dynamicvit-tiny-digits.json"))
    model.eval()
    with torch.inference_mode():
        _, trace = model.trace_tokens(image=torch.rand(2, 1, 8, 8))
    assert [s.name for s in trace.stages] == ["encoder.prune.0", "encoder.prune.1"]
    assert trace.kept("encoder.prune.1").shape == (2, 16)
    with pytest.raises(KeyError, match=r"encoder\.prune\.0, encoder\.prune\.1"):
        trace.kept("encoder.prune.2")
