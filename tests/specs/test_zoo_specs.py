"""Every file in ``specs/`` is a valid spec whose description says where it comes from."""

from __future__ import annotations

import json
from pathlib import Path

from archlab import load_spec
from archlab.specs.analysis import analyze
from archlab.specs.models import Spec


def test_zoo_spec_validates(zoo_path: Path) -> None:
    spec = load_spec(zoo_path)
    assert isinstance(spec, Spec)
    graph = analyze(spec)
    assert set(graph.order) == set(spec.nodes)
    for out in spec.outputs:
        assert graph.alias[out] in graph.expanded


def test_zoo_spec_is_named_after_its_file(zoo_path: Path) -> None:
    doc = json.loads(zoo_path.read_text(encoding="utf-8"))
    assert doc["name"] == zoo_path.stem
    assert doc["version"] == 1
    assert doc["$schema"] == "../docs/spec.schema.json"
    assert len(doc.get("description", "")) > 40


def test_zoo_is_not_empty() -> None:
    assert len(sorted(Path(__file__).parents[2].glob("specs/*.json"))) >= 14
