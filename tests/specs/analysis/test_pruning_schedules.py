"""``archlab.specs.analysis.pruning``: prune schedules and ``token_prune`` nodes checked, keep counts,
and the pruning methods of nodes and graphs."""

from __future__ import annotations

import pytest
from analysis_testing import Doc, attention, enc, graph_of, load_zoo, without_cls

from archlab.specs.analysis import SeqShape, kept_tokens

# ---------------------------------------------------------------------------------------- pruning


def test_prune_at_outside_the_stack(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["prune"] = {"method": "dynamic", "at": [1, 4, 7], "keep": 0.5}
    spec_error(doc, "nodes.enc.prune.at", r"^4, 7 outside the stack \(depth 4: layers 0-3\)$")


@pytest.mark.parametrize("at", [[2, 1], [1, 1]])
def test_prune_at_not_ascending(spec_error, minimal_vit, at: list[int]) -> None:
    doc = minimal_vit()
    enc(doc)["prune"] = {"method": "dynamic", "at": at, "keep": 0.5}
    spec_error(
        doc,
        "nodes.enc.prune.at",
        rf"^layer indices must be unique and ascending, not \[{at[0]}, {at[1]}\]$",
    )


def test_prune_keep_outside_range_has_its_path(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["prune"] = {"method": "attention_topk", "at": [1], "keep": 1.01}
    spec_error(doc, "nodes.enc.prune.keep", r"less than or equal to 1")


def test_merge_without_r(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["prune"] = {"method": "merge", "at": [1]}
    spec_error(
        doc, "nodes.enc.prune", r"^method 'merge' needs 'r', the token pairs merged per layer$"
    )


def test_fuse_on_dynamic(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["prune"] = {"method": "dynamic", "at": [1], "keep": 0.5, "fuse": True}
    spec_error(
        doc, "nodes.enc.prune", r"^'fuse' belongs to method 'attention_topk', not 'dynamic'$"
    )


def test_attention_topk_without_cls_token(spec_error, minimal_vit) -> None:
    doc = without_cls(minimal_vit())
    enc(doc)["prune"] = {"method": "attention_topk", "at": [1], "keep": 0.5}
    spec_error(
        doc,
        "nodes.enc.prune.method",
        r"^attention_topk scores tokens by the CLS token's attention, but no cls_token is upstream; "
        r"add one or use 'dynamic'$",
    )


def test_dynamic_without_cls_token_is_fine(minimal_vit) -> None:
    doc = without_cls(minimal_vit())
    doc["nodes"]["head"]["pool"] = "mean"
    enc(doc)["prune"] = {"method": "dynamic", "at": [1], "keep": 0.5}
    assert graph_of(doc).nodes["enc"].shape.length == 8


@pytest.mark.parametrize(
    "method", [{"method": "merge", "r": 2}, {"method": "attention_topk", "keep": 0.5}]
)
def test_attention_reading_pruning_needs_softmax(spec_error, minimal_vit, method: Doc) -> None:
    doc = minimal_vit()
    attention(doc)["kind"] = "linear"
    enc(doc)["prune"] = {"at": [1], **method}
    spec_error(
        doc,
        "nodes.enc.prune.method",
        rf"^{method['method']} needs softmax attention; the layer uses linear attention$",
    )


def test_explicit_token_prune_after_a_stack(minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["tp"] = {"op": "token_prune", "input": "enc", "method": "merge", "r": 3}
    doc["nodes"]["head"]["input"] = "tp"
    graph = graph_of(doc)
    stage = graph.nodes["tp"].prune
    assert (stage.placement, stage.tokens_before, stage.tokens_after, stage.head_dim) == (
        "between",
        17,
        14,
        16,
    )
    assert graph.nodes["tp"].shape == SeqShape(14, 64, n_cls=1, dim_from="nodes.patches.dim")


def test_explicit_token_prune_reads_through_norm_and_dropout(minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["n"] = {"op": "norm", "input": "enc"}
    doc["nodes"]["d"] = {"op": "dropout", "input": "n", "p": 0.1}
    doc["nodes"]["tp"] = {
        "op": "token_prune",
        "input": "d",
        "method": "attention_topk",
        "keep": 0.5,
    }
    doc["nodes"]["head"]["input"] = "tp"
    assert graph_of(doc).nodes["tp"].shape.length == 1 + 8


def test_explicit_attention_pruning_needs_a_stack_before_it(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["tp"] = {"op": "token_prune", "input": "pos", "method": "merge", "r": 2}
    enc(doc)["input"] = "tp"
    spec_error(
        doc,
        "nodes.tp.method",
        r"^merge reads the attention of the layer before it, but 'pos' is not an encoder/decoder",
    )


def test_explicit_attention_topk_without_cls_token(spec_error, minimal_vit) -> None:
    doc = without_cls(minimal_vit())
    doc["nodes"]["head"]["pool"] = "mean"
    doc["nodes"]["tp"] = {
        "op": "token_prune",
        "input": "enc",
        "method": "attention_topk",
        "keep": 0.5,
    }
    doc["nodes"]["head"]["input"] = "tp"
    spec_error(doc, "nodes.tp.method", r"no cls_token is upstream")


# ------------------------------------------------------------------------------------ keep counts


@pytest.mark.parametrize(
    ("keep", "patches", "kept"),
    [(0.7, 10, 7), (0.7, 196, 138), (0.7, 138, 97), (0.7, 97, 68), (0.5, 3, 2), (1e-9, 5, 1), (1.0, 5, 5)],
)  # fmt: skip
def test_kept_tokens(keep: float, patches: int, kept: int) -> None:
    assert kept_tokens(keep, patches) == kept


def test_dynamicvit_keep_counts_are_hierarchical() -> None:
    graph = load_zoo("dynamicvit-deit-s")
    stages = graph.nodes["encoder"].stack.stages
    assert [(s.layer, s.placement) for s in stages] == [(3, "before"), (6, "before"), (9, "before")]
    assert [s.tokens_before - s.n_cls for s in stages] == [196, 138, 97]
    assert [s.tokens_after - s.n_cls for s in stages] == [138, 97, 68]
    layers = graph.nodes["encoder"].stack.layers
    assert [layer.tokens for layer in layers] == [197] * 3 + [139] * 3 + [98] * 3 + [69] * 3
    assert graph.nodes["encoder"].shape.length == 69
    assert graph.nodes["encoder"].shape.grid is None


def test_evit_fused_keep_counts() -> None:
    graph = load_zoo("evit-deit-s")
    stages = graph.nodes["encoder"].stack.stages
    assert [s.placement for s in stages] == ["inside"] * 3
    assert [s.tokens_after - s.n_cls for s in stages] == [138 + 1, 98 + 1, 70 + 1]
    layers = graph.nodes["encoder"].stack.layers
    # the pruning layer's attention sees the tokens before, its MLP those after
    assert (layers[3].tokens, layers[3].tokens_mlp) == (197, 140)
    assert (layers[4].tokens, layers[4].tokens_mlp) == (140, 140)
    assert stages[0].head_dim == 64


def test_fuse_adds_one_token_only_when_some_are_dropped(minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["prune"] = {"method": "attention_topk", "at": [1, 2], "keep": 0.5, "fuse": True}
    stages = graph_of(doc).nodes["enc"].stack.stages
    assert [s.tokens_after for s in stages] == [1 + 8 + 1, 1 + 5 + 1]
    enc(doc)["prune"]["keep"] = 1.0
    stages = graph_of(doc).nodes["enc"].stack.stages
    assert [s.tokens_after for s in stages] == [17, 17]


def test_merge_r_is_capped_at_half_the_patches(minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["prune"] = {"method": "merge", "at": [0, 1, 2, 3], "r": 5}
    stages = graph_of(doc).nodes["enc"].stack.stages
    assert [s.tokens_after - 1 for s in stages] == [11, 6, 3, 2]
    enc(doc)["prune"] = {"method": "merge", "at": [0, 1], "r": 100}
    stages = graph_of(doc).nodes["enc"].stack.stages
    assert [s.tokens_after - 1 for s in stages] == [8, 4]


def test_keep_is_at_least_one_patch(minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["prune"] = {"method": "dynamic", "at": [1, 2], "keep": 0.01}
    assert graph_of(doc).nodes["enc"].shape.length == 1 + 1


# -------------------------------------------------------------------- methods of nodes and graphs


def test_prune_methods_of_nodes_and_graphs(minimal_vit) -> None:
    from archlab.specs.analysis import graph_prune_methods, has_pruning, prune_methods

    doc = minimal_vit()
    dense = graph_of(doc)
    assert graph_prune_methods(dense) == set() and not has_pruning(dense)
    doc["nodes"]["tp"] = {"op": "token_prune", "input": "enc", "method": "merge", "r": 3}
    doc["nodes"]["head"]["input"] = "tp"
    enc(doc)["prune"] = {"method": "attention_topk", "at": [1], "keep": 0.5}
    graph = graph_of(doc)
    assert prune_methods(graph.nodes["tp"]) == {"merge"}
    assert prune_methods(graph.nodes["enc"]) == {"attention_topk"}
    assert prune_methods(graph.nodes["head"]) == set()
    assert graph_prune_methods(graph) == {"merge", "attention_topk"} and has_pruning(graph)
