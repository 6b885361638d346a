"""``archlab.specs.analysis.graph``: ``analyze`` of whole specs, every node's shape in order."""

from __future__ import annotations

from analysis_testing import graph_of

from archlab.specs.analysis import SeqShape, TokensShape, VecShape

# ----------------------------------------------------------------------------------------- shapes


def test_vit_shapes(minimal_vit) -> None:
    graph = graph_of(minimal_vit())
    shapes = {node: str(info.shape) for node, info in graph.nodes.items()}
    assert shapes == {
        "image": "(B, 1, 8, 8)",
        "patches": "(B, 16, 64)",
        "cls": "(B, 17, 64)",
        "pos": "(B, 17, 64)",
        "enc": "(B, 17, 64)",
        "head": "(B, 10)",
    }
    assert graph.nodes["cls"].shape == SeqShape(
        17, 64, n_cls=1, grid=(4, 4), dim_from="nodes.patches.dim"
    )
    assert graph.nodes["cls"].shape.patches == 16
    assert graph.nodes["head"].shape == VecShape(10, "nodes.head.classes")
    assert graph.order == ["patches", "cls", "pos", "enc", "head"]
    assert graph.shape("enc") == graph.nodes["enc"].shape


def test_gpt_shapes(minimal_gpt) -> None:
    graph = graph_of(minimal_gpt())
    assert graph.nodes["ids"].shape == TokensShape(32, 100)
    assert str(graph.nodes["ids"].shape) == "(B, 32)"
    assert graph.nodes["tok"].shape == SeqShape(32, 64, dim_from="nodes.tok.dim")
    assert str(graph.nodes["logits"].shape) == "(B, 32, 100)"
    stack = graph.nodes["dec"].stack
    assert (stack.op, stack.dim, stack.causal, len(stack.layers)) == ("decoder", 64, True, 2)
    assert stack.layers[0].hidden == 256
