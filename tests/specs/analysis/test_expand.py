"""``archlab.specs.analysis.expand``: the expanded graph of pruned stacks and decoder memory edges."""

from __future__ import annotations

import itertools

from analysis_testing import enc, graph_of, load_zoo, with_memory

# --------------------------------------------------------------------------------- expanded graph


def test_expanded_graph_of_a_pruned_stack() -> None:
    graph = load_zoo("dynamicvit-deit-s")
    order = list(graph.expanded)
    assert order == [
        "image",
        "patches",
        "cls",
        "pos",
        "encoder.layers.0-2",
        "encoder.prune.3",
        "encoder.layers.3-5",
        "encoder.prune.6",
        "encoder.layers.6-8",
        "encoder.prune.9",
        "encoder.layers.9-11",
        "norm",
        "head",
    ]
    edges = list(graph.expanded.edges)
    assert edges == list(itertools.pairwise(order))
    assert graph.alias["encoder"] == "encoder.layers.9-11"
    assert graph.alias["pos"] == "pos"
    nodes = graph.expanded.nodes
    assert nodes["encoder.layers.3-5"]["layers"] == (3, 5)
    assert nodes["encoder.layers.3-5"]["op"] == "encoder"
    assert nodes["encoder.prune.6"]["op"] == "token_prune"
    assert nodes["encoder.prune.6"]["stage"].layer == 6
    assert all(nodes[n]["spec_id"] == "encoder" for n in order[4:11])
    assert [nodes[n]["shape"].length for n in order[4:11]] == [197, 139, 139, 98, 98, 69, 69]


def test_expanded_graph_with_inside_pruning() -> None:
    graph = load_zoo("evit-deit-s")
    assert [n for n in graph.expanded if n.startswith("encoder")] == [
        "encoder.layers.0-3",
        "encoder.prune.3",
        "encoder.layers.4-6",
        "encoder.prune.6",
        "encoder.layers.7-9",
        "encoder.prune.9",
        "encoder.layers.10-11",
    ]
    assert graph.alias["encoder"] == "encoder.layers.10-11"


def test_expanded_graph_with_pruning_at_the_ends(minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["prune"] = {"method": "dynamic", "at": [0, 1], "keep": 0.5}
    graph = graph_of(doc)
    assert [n for n in graph.expanded if n.startswith("enc")] == [
        "enc.prune.0",
        "enc.layers.0",
        "enc.prune.1",
        "enc.layers.1-3",
    ]
    enc(doc)["prune"] = {"method": "merge", "at": [3], "r": 2}
    graph = graph_of(doc)
    assert [n for n in graph.expanded if n.startswith("enc")] == ["enc.layers.0-3", "enc.prune.3"]
    assert graph.alias["enc"] == "enc.prune.3"
    assert list(graph.expanded.predecessors("head")) == ["enc.prune.3"]


def test_expanded_graph_without_pruning_mirrors_the_spec(zoo_path) -> None:
    graph = graph_of(str(zoo_path))
    pruned = [info.id for info in graph.nodes.values() if info.stack and info.stack.stages]
    if pruned:
        assert all(graph.alias[p] != p for p in pruned)
        return
    assert set(graph.expanded) == set(graph.spec.inputs) | set(graph.spec.nodes)
    assert graph.alias == {n: n for n in graph.expanded}
    for node_id, info in graph.nodes.items():
        assert set(graph.expanded.predecessors(node_id)) == set(info.inputs)
        assert graph.expanded.nodes[node_id]["shape"] == info.shape


def test_decoder_memory_is_an_edge(minimal_gpt) -> None:
    graph = graph_of(with_memory(minimal_gpt()))
    assert set(graph.expanded.predecessors("dec")) == {"tok", "src"}
    assert graph.nodes["dec"].inputs == ["tok", "src"]
    assert graph.nodes["dec"].stack.memory == "src"
