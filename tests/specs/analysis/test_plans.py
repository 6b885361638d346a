"""``archlab.specs.analysis.plans``: walking upstream through pass-through ops."""

from __future__ import annotations

from analysis_testing import graph_of


def test_upstream_through_walks_norm_and_dropout_only(minimal_vit) -> None:
    from archlab.specs.analysis import upstream_through

    doc = minimal_vit()
    doc["nodes"]["n"] = {"op": "norm", "input": "enc"}
    doc["nodes"]["d"] = {"op": "dropout", "input": "n", "p": 0.1}
    doc["nodes"]["head"]["input"] = "d"
    nodes = graph_of(doc).nodes
    assert upstream_through(nodes, "d").id == "enc"  # type: ignore[union-attr]
    assert upstream_through(nodes, "n").id == "enc"  # type: ignore[union-attr]
    assert upstream_through(nodes, "enc").id == "enc"  # type: ignore[union-attr]
    assert upstream_through(nodes, "d", ops=("dropout",)).id == "n"  # type: ignore[union-attr]
    assert upstream_through(nodes, "missing") is None
