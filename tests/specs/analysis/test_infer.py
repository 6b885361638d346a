"""``archlab.specs.analysis.infer``: the INFER table covers every op, and infer functions
called alone, on a context holding only the nodes they read."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from analysis_testing import Doc, attention, enc, graph_of, with_second_tokens, without_cls

from archlab import load_spec
from archlab.specs.analysis import (
    INFER,
    ClassifyPlan,
    EmbedPlan,
    ImageShape,
    LMHeadPlan,
    NodeInfo,
    PoolPlan,
    PositionPlan,
    SeqShape,
    VecShape,
)
from archlab.specs.analysis.context import Context
from archlab.specs.analysis.infer import infer_pool, infer_position
from archlab.specs.models import OPS, Node, PoolNode, PositionNode


def union_ops() -> list[str]:
    """The op of each member of the ``Node`` union, from its ``op`` Literal."""
    members = get_args(get_args(Node)[0])
    ops = []
    for member in members:
        (op,) = get_args(member.model_fields["op"].annotation)
        ops.append(op)
    return ops


def test_infer_has_one_entry_per_op_of_the_node_union() -> None:
    ops = union_ops()
    assert len(ops) == len(set(ops)) == len(get_args(get_args(Node)[0]))
    assert sorted(INFER) == sorted(ops)
    assert sorted(OPS) == sorted(ops)


def context_with(minimal_vit: Any, **infos: SeqShape) -> Context:
    """A context whose analysed nodes are only ``infos`` (id -> the sequence it outputs)."""
    ctx = Context(load_spec(minimal_vit()))
    for ref, shape in infos.items():
        ctx.infos[ref] = NodeInfo(ref, "norm", None, shape)
    return ctx


def test_infer_pool_alone(minimal_vit) -> None:
    ctx = context_with(minimal_vit, x=SeqShape(17, 64, n_cls=1, dim_from="nodes.x.dim"))
    info = infer_pool(ctx, "p", PoolNode(op="pool", input="x"))
    assert info is not None and not ctx.errors
    assert info.shape == VecShape(64, "nodes.x.dim")
    assert info.plan == PoolPlan(mode="cls", n_cls=1)
    assert info.stack is None and info.prune is None


def test_infer_pool_alone_reports_cls_without_cls_tokens(minimal_vit) -> None:
    ctx = context_with(minimal_vit, x=SeqShape(16, 64))
    assert infer_pool(ctx, "p", PoolNode(op="pool", input="x", mode="cls")) is None
    assert ctx.errors.items == [
        (
            "nodes.p.mode",
            "pool mode 'cls' needs a cls_token upstream, and there is none; use 'mean'",
        )
    ]


def test_infer_position_alone(minimal_vit) -> None:
    ctx = context_with(minimal_vit, x=SeqShape(10, 32))
    node = PositionNode(op="position", input="x", encoding="learned")
    info = infer_position(ctx, "pos", node)
    assert info is not None and info.plan == PositionPlan(max_len=10)
    assert info.shape == SeqShape(10, 32)
    short = PositionNode(op="position", input="x", encoding="learned", max_len=4)
    assert infer_position(ctx, "pos", short) is None
    [(path, message)] = ctx.errors.items
    assert path == "nodes.pos.max_len" and message.startswith("max_len 4 is shorter")


# ------------------------------------------------------------------------------------- embeddings


def test_tie_to_a_non_embedding(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["nodes"]["logits"]["tie"] = "norm"
    spec_error(doc, "nodes.logits.tie", r"^can only tie to an embed node; 'norm' is a norm node$")


def test_embed_tied_to_a_non_embedding(spec_error, minimal_gpt) -> None:
    doc = with_second_tokens(minimal_gpt(), tie="pooled")
    doc["nodes"]["pooled"] = {"op": "pool", "input": "tok"}
    spec_error(doc, "nodes.tok2.tie", r"^can only tie to an embed node; 'pooled' is a pool node$")


@pytest.mark.parametrize("node", ["tok2", "logits"])
def test_tie_to_an_input(spec_error, minimal_gpt, node: str) -> None:
    doc = with_second_tokens(minimal_gpt(), dim=64)
    doc["nodes"][node]["tie"] = "ids"
    spec_error(doc, f"nodes.{node}.tie", r"can only tie to an embed node; 'ids' is an input")


def test_tied_embeddings_of_different_widths(spec_error, minimal_gpt) -> None:
    doc = with_second_tokens(minimal_gpt(), dim=32, tie="tok")
    spec_error(
        doc,
        "nodes.tok2.dim",
        r"^dim 32 differs from the tied embedding 'tok' \(dim 64, from nodes\.tok\.dim\); "
        r"drop dim or make them equal$",
    )


def test_tied_embedding_with_the_same_dim_written_out(minimal_gpt) -> None:
    graph = graph_of(with_second_tokens(minimal_gpt(), dim=64, tie="tok"))
    assert graph.nodes["tok2"].plan == EmbedPlan(dim=64, vocab=100, tie_root="tok")


def test_tied_embeddings_need_equal_vocabularies(spec_error, minimal_gpt) -> None:
    doc = with_second_tokens(minimal_gpt(), vocab=50, tie="tok")
    spec_error(
        doc,
        "nodes.tok2.tie",
        r"^tied embeddings need equal vocabularies: input 'ids2' has vocab_size 50, "
        r"embedding 'tok' has 100$",
    )


def test_lm_head_tied_to_an_embedding_of_another_width(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["inputs"]["ids2"] = {"kind": "tokens", "vocab_size": 100, "max_len": 32}
    doc["nodes"]["tok2"] = {"op": "embed", "input": "ids2", "dim": 32}
    doc["nodes"]["dec"]["input"] = "tok2"
    spec_error(
        doc,
        "nodes.logits.tie",
        r"^lm_head input width 32 \(from nodes\.tok2\.dim\) differs from the tied embedding "
        r"'tok' \(dim 64\); tying needs equal widths$",
    )


def test_tied_lm_head_with_a_different_vocab_size(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["nodes"]["logits"]["vocab_size"] = 99
    spec_error(
        doc,
        "nodes.logits.vocab_size",
        r"^vocab_size 99 differs from the tied embedding 'tok''s vocabulary 100; leave it out$",
    )


def test_untied_lm_head_needs_a_vocab_size(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    del doc["nodes"]["logits"]["tie"]
    spec_error(
        doc,
        "nodes.logits.vocab_size",
        r"^'vocab_size' is required when the head is not tied to an embed$",
    )


def test_embed_without_dim_or_tie(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    del doc["nodes"]["tok"]["dim"]
    spec_error(
        doc, "nodes.tok.dim", r"^'dim' is required \(or 'tie' to share another embed's weight\)$"
    )


def test_tie_chains_share_the_first_embedding(minimal_gpt) -> None:
    doc = with_second_tokens(minimal_gpt(), tie="tok")
    doc["nodes"]["logits"]["tie"] = "tok2"
    graph = graph_of(doc)
    assert graph.nodes["tok2"].plan_as(EmbedPlan).tie_root == "tok"
    assert graph.nodes["logits"].plan == LMHeadPlan(vocab=100, tie_root="tok", in_dim=64)


@pytest.mark.parametrize(
    ("kind", "described"),
    [
        ({"kind": "image", "channels": 1, "size": 8}, r"'x' is an image input \(add a patch_embed node first\)"),
        ({"kind": "features", "dim": 64, "max_len": 8}, r"'x' is a sequence \(B, 8, 64\)"),
    ],
    ids=["image", "features"],
)  # fmt: skip
def test_embed_on_a_non_tokens_input(spec_error, minimal_gpt, kind: Doc, described: str) -> None:
    doc = minimal_gpt()
    doc["inputs"] = {"x": kind}
    doc["nodes"]["tok"]["input"] = "x"
    spec_error(doc, "nodes.tok.input", rf"^embed takes a tokens input, but {described}$")


def test_patch_embed_on_tokens(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["nodes"]["tok"] = {"op": "patch_embed", "input": "ids", "dim": 64, "patch_size": 2}
    doc["nodes"]["logits"] = {"op": "lm_head", "input": "norm", "vocab_size": 100}
    spec_error(
        doc,
        "nodes.tok.input",
        r"^patch_embed takes an image input, but 'ids' is a tokens input \(add an embed node first\)$",
    )


@pytest.mark.parametrize(
    ("op", "node"),
    [
        ("norm", {"op": "norm", "input": "image"}),
        ("cls_token", {"op": "cls_token", "input": "image"}),
        ("position", {"op": "position", "input": "image", "encoding": "learned"}),
        ("pool", {"op": "pool", "input": "image"}),
        ("classify", {"op": "classify", "input": "image", "classes": 3}),
    ],
)
def test_sequence_ops_on_an_image(spec_error, minimal_vit, op: str, node: Doc) -> None:
    doc = minimal_vit()
    doc["nodes"]["bad"] = node
    doc["nodes"]["sum"] = {"op": "concat", "inputs": ["enc", "bad"], "axis": "sequence"}
    doc["nodes"]["head"]["input"] = "sum"
    needs = "features" if op in ("norm", "classify") else "a token sequence"
    spec_error(
        doc,
        "nodes.bad.input",
        rf"^{op} needs {needs}, but 'image' is an image input \(add a patch_embed node first\)$",
    )


def test_dropout_on_token_ids(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["nodes"]["drop"] = {"op": "dropout", "input": "ids", "p": 0.1}
    doc["nodes"]["tok"]["input"] = "drop"
    spec_error(doc, "nodes.drop.input", r"dropout")


def test_patch_size_not_dividing_the_image(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["inputs"]["image"]["size"] = [8, 9]
    doc["nodes"]["patches"]["patch_size"] = [2, 2]
    error = spec_error(
        doc,
        "nodes.patches.patch_size",
        r"^patch size 2 does not divide the image width 9 \(from inputs\.image\.size\)$",
    )
    assert len(error.errors) == 1


def test_rectangular_patches(minimal_vit) -> None:
    doc = minimal_vit()
    doc["inputs"]["image"]["size"] = [8, 12]
    doc["nodes"]["patches"]["patch_size"] = [4, 2]
    graph = graph_of(doc)
    assert graph.nodes["image"].shape == ImageShape(1, 8, 12)
    assert graph.nodes["patches"].shape == SeqShape(
        12, 64, grid=(2, 6), dim_from="nodes.patches.dim"
    )


# ------------------------------------------------------------------------------------------ pools


def test_pool_cls_without_cls_token(spec_error, minimal_vit) -> None:
    doc = without_cls(minimal_vit())
    doc["nodes"]["head"]["pool"] = "cls"
    spec_error(
        doc,
        "nodes.head.pool",
        r"^pool mode 'cls' needs a cls_token upstream, and there is none; use 'mean'$",
    )


def test_pool_distill_needs_two_cls_tokens(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["head"]["pool"] = "distill"
    spec_error(
        doc,
        "nodes.head.pool",
        r"^pool mode 'distill' reads the second CLS token and needs a cls_token with count 2 "
        r"upstream; this sequence has 1$",
    )


def test_pool_node_cls_without_cls_token(spec_error, minimal_vit) -> None:
    doc = without_cls(minimal_vit())
    doc["nodes"]["p"] = {"op": "pool", "input": "enc", "mode": "cls"}
    doc["nodes"]["head"]["input"] = "p"
    spec_error(doc, "nodes.p.mode", r"^pool mode 'cls' needs a cls_token upstream")


def test_classify_on_pooled_vectors_takes_no_pool(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["p"] = {"op": "pool", "input": "enc", "mode": "max"}
    doc["nodes"]["head"].update(input="p", pool="mean")
    spec_error(doc, "nodes.head.pool", r"^'p' is already pooled \(B, 64\); leave pool out$")


@pytest.mark.parametrize(("has_cls", "mode"), [(True, "cls"), (False, "mean")])
def test_default_pool_mode(minimal_vit, has_cls: bool, mode: str) -> None:
    doc = minimal_vit() if has_cls else without_cls(minimal_vit())
    doc["nodes"]["p"] = {"op": "pool", "input": "enc"}
    doc["nodes"]["head"]["input"] = "enc"
    doc["nodes"]["sum"] = {"op": "add", "inputs": ["p", "p"]}
    doc["outputs"] = ["head", "sum"]
    graph = graph_of(doc)
    assert graph.nodes["head"].plan_as(ClassifyPlan).mode == mode
    assert graph.nodes["p"].plan_as(PoolPlan).mode == mode
    assert graph.nodes["p"].shape == VecShape(64, "nodes.patches.dim")
    assert graph.nodes["sum"].shape == VecShape(64, "nodes.patches.dim")


# -------------------------------------------------------------------------------------- positions


def test_position_max_len_shorter_than_the_sequence(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["pos"]["max_len"] = 16
    spec_error(
        doc,
        "nodes.pos.max_len",
        r"^max_len 16 is shorter than the sequence it encodes \(17 tokens from 'cls'\); "
        r"raise it or leave it out$",
    )


def test_position_max_len_defaults_to_the_sequence(minimal_vit, minimal_gpt) -> None:
    assert graph_of(minimal_vit()).nodes["pos"].plan == PositionPlan(max_len=17)
    doc = minimal_gpt()
    doc["nodes"]["pos"] = {"op": "position", "input": "tok", "encoding": "sinusoidal"}
    doc["nodes"]["dec"]["input"] = "pos"
    assert graph_of(doc).nodes["pos"].plan == PositionPlan(max_len=32)
    doc["nodes"]["pos"]["max_len"] = 100
    assert graph_of(doc).nodes["pos"].plan == PositionPlan(max_len=100)


def test_sincos_2d_without_an_image_grid(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["nodes"]["pos"] = {"op": "position", "input": "tok", "encoding": "sincos_2d"}
    doc["nodes"]["dec"]["input"] = "pos"
    spec_error(
        doc,
        "nodes.pos.encoding",
        r"^sincos_2d needs an image patch grid, but 'tok' carries no grid; "
        r"use 'learned' or 'sinusoidal'$",
    )


def test_sincos_2d_after_pruning_has_no_grid(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["prune"] = {"method": "dynamic", "at": [1], "keep": 0.5}
    doc["nodes"]["pos2"] = {"op": "position", "input": "enc", "encoding": "sincos_2d"}
    doc["nodes"]["head"]["input"] = "pos2"
    spec_error(doc, "nodes.pos2.encoding", r"'enc' carries no grid")


def test_sincos_2d_keeps_the_grid_through_cls_and_unpruned_stacks(minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["pos"]["encoding"] = "sincos_2d"
    doc["nodes"]["pos2"] = {"op": "position", "input": "enc", "encoding": "sincos_2d"}
    doc["nodes"]["head"]["input"] = "pos2"
    graph = graph_of(doc)
    assert graph.nodes["enc"].shape.grid == (4, 4)
    assert graph.nodes["pos2"].plan == PositionPlan(max_len=17)


def test_sincos_2d_width_divisible_by_four(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["patches"]["dim"] = 66
    doc["nodes"]["pos"]["encoding"] = "sincos_2d"
    attention(doc)["heads"] = 6
    spec_error(
        doc,
        "nodes.pos.encoding",
        r"^sincos_2d needs a width divisible by 4, not 66 \(from nodes\.patches\.dim\)$",
    )


def test_sincos_2d_with_its_own_max_len(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["pos"].update(encoding="sincos_2d", max_len=20)
    spec_error(doc, "nodes.pos.max_len", r"^sincos_2d encodes the grid itself; leave max_len out$")


# ---------------------------------------------------------------------------- merges: add, concat


def test_add_with_different_shapes(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["sum"] = {"op": "add", "inputs": ["pos", "patches"]}
    enc(doc)["input"] = "sum"
    spec_error(
        doc,
        "nodes.sum.inputs",
        r"^add needs equal shapes: 'pos' is \(B, 17, 64\), 'patches' is \(B, 16, 64\)$",
    )


def test_add_of_token_ids_says_why(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["inputs"]["ids2"] = {"kind": "tokens", "vocab_size": 100, "max_len": 32}
    doc["nodes"]["sum"] = {"op": "add", "inputs": ["ids", "ids2"]}
    doc["nodes"]["tok"]["input"] = "sum"
    error = spec_error(doc, "nodes.sum.inputs", r"tokens input")
    assert not any("equal shapes" in m for _, m in error.errors)


def test_concat_along_the_sequence_with_different_widths(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["p2"] = {"op": "patch_embed", "input": "image", "dim": 32, "patch_size": 2}
    doc["nodes"]["both"] = {"op": "concat", "inputs": ["patches", "p2"]}
    doc["nodes"]["cls"]["input"] = "both"
    spec_error(
        doc,
        "nodes.both.inputs",
        r"^concat along the sequence needs equal widths: 'patches' has 64 \(from nodes\.patches\.dim\), "
        r"'p2' has 32 \(from nodes\.p2\.dim\)$",
    )


def test_concat_along_features_with_different_lengths(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["p2"] = {"op": "patch_embed", "input": "image", "dim": 32, "patch_size": 4}
    doc["nodes"]["both"] = {"op": "concat", "inputs": ["patches", "p2"], "axis": "feature"}
    doc["nodes"]["cls"]["input"] = "both"
    spec_error(
        doc,
        "nodes.both.inputs",
        r"^concat along features needs equal lengths: 'patches' has 16 tokens, 'p2' has 4$",
    )


def test_concat_shapes(minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["p2"] = {"op": "patch_embed", "input": "image", "dim": 64, "patch_size": 4}
    doc["nodes"]["seq"] = {"op": "concat", "inputs": ["patches", "p2", "p2"]}
    doc["nodes"]["p3"] = {"op": "patch_embed", "input": "image", "dim": 16, "patch_size": 2}
    doc["nodes"]["feat"] = {"op": "concat", "inputs": ["patches", "p3"], "axis": "feature"}
    doc["nodes"]["cls"]["input"] = "seq"
    doc["nodes"]["f_head"] = {"op": "classify", "input": "feat", "classes": 2}
    doc["outputs"] = ["head", "f_head"]
    graph = graph_of(doc)
    assert graph.nodes["seq"].shape == SeqShape(16 + 4 + 4, 64, dim_from="nodes.patches.dim")
    assert graph.nodes["cls"].shape.length == 25
    assert graph.nodes["pos"].plan_as(PositionPlan).max_len == 25
    assert graph.nodes["feat"].shape == SeqShape(16, 80, grid=(4, 4), dim_from="nodes.feat")


def test_concat_of_token_ids(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["nodes"]["both"] = {"op": "concat", "inputs": ["tok", "ids"]}
    doc["nodes"]["dec"]["input"] = "both"
    spec_error(
        doc, "nodes.both.inputs", r"^concat needs a token sequence, but 'ids' is a tokens input"
    )


# ------------------------------------------------------------------------------------- CLS tokens


def test_two_cls_tokens(minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["cls"]["count"] = 2
    shape = graph_of(doc).nodes["enc"].shape
    assert (shape.length, shape.n_cls, shape.patches) == (18, 2, 16)
