"""``archlab.specs.analysis``: graph checks with their paths and wording, shape inference,
pruning keep counts, the expanded graph of pruned stacks, and the torch attribute list."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from archlab import SpecError, load_spec
from archlab.specs.analysis import (
    MODULE_ATTRIBUTES,
    ClassifyPlan,
    EmbedPlan,
    Graph,
    ImageShape,
    LMHeadPlan,
    PoolPlan,
    PositionPlan,
    SeqShape,
    TokensShape,
    VecShape,
    analyze,
    kept_tokens,
)
from archlab.specs.models import CausalMask, NoMask, SlidingWindowMask

SPECS = Path(__file__).parents[3] / "specs"
Doc = dict[str, Any]


def enc(doc: Doc) -> Doc:
    return doc["nodes"]["enc"]


def attention(doc: Doc) -> Doc:
    return doc["nodes"]["enc"]["block"]["attention"]


def dec_attention(doc: Doc) -> Doc:
    return doc["nodes"]["dec"]["block"]["attention"]


def graph_of(doc: Doc | str) -> Graph:
    return analyze(load_spec(doc))


def with_second_tokens(doc: Doc, vocab: int = 100, **embed: Any) -> Doc:
    """Add an ``ids2`` input and a ``tok2`` embed of it, summed with ``tok`` before the decoder."""
    doc["inputs"]["ids2"] = {"kind": "tokens", "vocab_size": vocab, "max_len": 32}
    doc["nodes"]["tok2"] = {"op": "embed", "input": "ids2", **embed}
    doc["nodes"]["both"] = {"op": "add", "inputs": ["tok", "tok2"]}
    doc["nodes"]["dec"]["input"] = "both"
    return doc


def without_cls(doc: Doc) -> Doc:
    del doc["nodes"]["cls"]
    doc["nodes"]["pos"]["input"] = "patches"
    return doc


def with_memory(doc: Doc) -> Doc:
    doc["inputs"]["src"] = {"kind": "features", "dim": 32, "max_len": 10}
    doc["nodes"]["dec"]["memory"] = "src"
    return doc


# ------------------------------------------------------------------------------------ references


def test_reference_to_a_missing_node_suggests_the_closest(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["input"] = "poss"
    spec_error(doc, "nodes.enc.input", r"^'poss' is not a node or input; did you mean 'pos'\?$")


def test_reference_to_a_missing_input_suggests_the_closest(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["patches"]["input"] = "imgae"
    spec_error(doc, "nodes.patches.input", r"did you mean 'image'\?$")


def test_reference_far_from_every_id_lists_the_known_ids(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["input"] = "zzzz"
    spec_error(
        doc,
        "nodes.enc.input",
        r"^'zzzz' is not a node or input; known: cls, enc, head, image, patches, pos$",
    )


@pytest.mark.parametrize(
    ("field", "path"),
    [
        ("inputs", "nodes.both.inputs.1"),
        ("memory", "nodes.dec.memory"),
        ("tie", "nodes.logits.tie"),
    ],
)
def test_unknown_reference_in_every_reference_field(
    spec_error, minimal_gpt, field: str, path: str
) -> None:
    doc = minimal_gpt()
    if field == "inputs":
        doc["nodes"]["both"] = {"op": "add", "inputs": ["tok", "tokk"]}
        doc["nodes"]["dec"]["input"] = "both"
        spec_error(doc, path, r"'tokk' is not a node or input; did you mean 'tok'\?")
    elif field == "memory":
        doc["nodes"]["dec"]["memory"] = "nrom"
        spec_error(doc, path, r"'nrom' is not a node or input; did you mean 'norm'\?")
    else:
        doc["nodes"]["logits"]["tie"] = "tokk"
        spec_error(doc, path, r"'tokk' is not a node or input; did you mean 'tok'\?")


def test_a_typo_in_a_reference_is_one_error(minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["input"] = "poss"
    with pytest.raises(SpecError) as exc:
        load_spec(doc)
    assert [p for p, _ in exc.value.errors] == ["nodes.enc.input"]


def test_cycle_is_named(minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["cls"]["input"] = "enc"  # cls -> pos -> enc -> cls
    with pytest.raises(SpecError) as exc:
        load_spec(doc)
    [(path, message)] = [(p, m) for p, m in exc.value.errors if "cycle" in m]
    loop = message.removeprefix("the graph has a cycle: ").split(" -> ")
    assert loop[0] == loop[-1] and len(loop) == 4, message
    assert path == f"nodes.{loop[0]}.input"
    # the loop reads along the data flow, whichever node it starts at
    assert "cls -> pos -> enc" in " -> ".join(loop[:-1] * 2), message


CYCLE_SCRIPT = """
import archlab
doc = {
    "version": 1,
    "inputs": {"image": {"kind": "image", "channels": 1, "size": 8}},
    "nodes": {
        "patches": {"op": "patch_embed", "input": "image", "dim": 64, "patch_size": 2},
        "cls": {"op": "cls_token", "input": "enc"},
        "pos": {"op": "position", "input": "cls", "encoding": "learned"},
        "enc": {"op": "encoder", "input": "pos", "depth": 1, "block": {"attention": {"heads": 4}}},
        "head": {"op": "classify", "input": "enc", "classes": 10},
    },
    "outputs": "head",
}
try:
    archlab.load_spec(doc)
except archlab.SpecError as error:
    print([e for e in error.errors if "cycle" in e[1]])
"""


def test_cycle_error_is_the_same_in_every_process() -> None:
    outputs = set()
    for seed in ("1", "2", "4"):
        result = subprocess.run(
            [sys.executable, "-c", CYCLE_SCRIPT],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            timeout=60,
            check=True,
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1, outputs


def test_self_loop_is_a_cycle(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["extra"] = {"op": "norm", "input": "extra"}
    doc["nodes"]["sum"] = {"op": "add", "inputs": ["enc", "extra"]}
    doc["nodes"]["head"]["input"] = "sum"
    spec_error(doc, "nodes.extra.input", r"^the graph has a cycle: extra -> extra$")


def test_embed_tied_to_itself(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["nodes"]["tok"]["tie"] = "tok"
    spec_error(doc, "nodes.tok.input", r"cycle: tok -> tok")


def test_unused_node(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["extra"] = {"op": "norm", "input": "enc"}
    error = spec_error(
        doc,
        "nodes.extra",
        r"^node 'extra' is not used by any output \(outputs: head\); remove it or list it in outputs$",
    )
    assert len(error.errors) == 1


def test_unused_input(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["inputs"]["other"] = {"kind": "features", "dim": 4, "max_len": 3}
    error = spec_error(doc, "inputs.other", r"^input 'other' is not used by any output; remove it$")
    assert len(error.errors) == 1


def test_output_naming_an_input(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["outputs"] = ["head", "image"]
    spec_error(doc, "outputs.1", r"^'image' is an input; outputs name nodes$")


def test_single_output_error_path_has_no_index(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["outputs"] = "hed"
    spec_error(doc, "outputs", r"^'hed' is not a node or input; did you mean 'head'\?$")


def test_output_naming_an_unknown_node(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["outputs"] = ["head", "hed"]
    spec_error(doc, "outputs.1", r"did you mean 'head'\?")


def test_output_listed_twice(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    doc["outputs"] = ["head", "head"]
    spec_error(doc, "outputs", r"^outputs list a node twice: \['head', 'head'\]$")


def test_several_outputs(minimal_vit) -> None:
    doc = minimal_vit()
    doc["outputs"] = ["head", "enc"]
    graph = graph_of(doc)
    assert graph.spec.outputs == ["head", "enc"]


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


@pytest.mark.parametrize("op", ["encoder", "decoder"])
def test_stack_on_a_tokens_input(spec_error, minimal_gpt, op: str) -> None:
    doc = minimal_gpt()
    doc["nodes"]["dec"]["op"] = op
    doc["nodes"]["dec"]["input"] = "ids"
    doc["nodes"]["logits"] = {"op": "lm_head", "input": "norm", "vocab_size": 100}
    del doc["nodes"]["tok"]
    spec_error(
        doc,
        "nodes.dec.input",
        rf"^{op} needs a token sequence, but 'ids' is a tokens input \(add an embed node first\)$",
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


# ---------------------------------------------------------------------------------- widths, heads


def test_heads_not_dividing_the_width_name_its_origin(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    attention(doc)["heads"] = 7
    error = spec_error(
        doc,
        "nodes.enc.block.attention.heads",
        r"^7 heads do not divide dim 64 \(dim comes from nodes\.patches\.dim\); "
        r"set head_dim or change heads$",
    )
    assert len(error.errors) == 1


def test_heads_not_dividing_the_width_of_a_tied_embedding(spec_error, minimal_gpt) -> None:
    doc = with_second_tokens(minimal_gpt(), tie="tok")
    doc["nodes"]["dec"]["input"] = "tok2"
    doc["nodes"]["both"]["inputs"] = ["tok", "tok"]
    doc["nodes"]["dec2"] = {"op": "decoder", "input": "tok2", "depth": 1, "block": {"attention": {"heads": 5}}}  # fmt: skip
    doc["nodes"]["sum"] = {"op": "add", "inputs": ["dec2", "both"]}
    doc["nodes"]["dec"]["input"] = "sum"
    spec_error(doc, "nodes.dec2.block.attention.heads", r"dim comes from nodes\.tok\.dim")


def test_heads_not_dividing_a_features_width(spec_error) -> None:
    doc = {
        "version": 1,
        "inputs": {"feats": {"kind": "features", "dim": 60, "max_len": 10}},
        "nodes": {
            "enc": {"op": "encoder", "input": "feats", "depth": 1, "block": {"attention": {"heads": 7}}},
            "head": {"op": "classify", "input": "enc", "classes": 3},
        },
        "outputs": "head",
    }  # fmt: skip
    spec_error(doc, "nodes.enc.block.attention.heads", r"dim comes from inputs\.feats\.dim\)")


def test_head_dim_lifts_the_divisibility_rule(minimal_vit) -> None:
    doc = minimal_vit()
    attention(doc).update(heads=7, head_dim=10)
    plan = graph_of(doc).nodes["enc"].stack.layers[0].attention
    assert (plan.heads, plan.kv_heads, plan.head_dim, plan.dim) == (7, 7, 10, 64)


def test_kv_heads_not_dividing_heads(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    attention(doc)["kv_heads"] = 3
    spec_error(doc, "nodes.enc.block.attention.kv_heads", r"^kv_heads 3 does not divide heads 4$")


def test_kv_heads_above_heads(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    attention(doc)["kv_heads"] = 8
    spec_error(doc, "nodes.enc.block.attention.kv_heads", r"^kv_heads 8 does not divide heads 4$")


def test_grouped_query_attention(minimal_vit) -> None:
    doc = minimal_vit()
    attention(doc)["kv_heads"] = 2
    plan = graph_of(doc).nodes["enc"].stack.layers[0].attention
    assert (plan.heads, plan.kv_heads, plan.head_dim) == (4, 2, 16)


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


def test_mlp_ratio_leaving_no_hidden_units(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["block"]["mlp"] = {"ratio": 0.001}
    spec_error(
        doc, "nodes.enc.block.mlp.ratio", r"^ratio 0\.001 of width 64 leaves no hidden units$"
    )


def test_huge_mlp_ratio_is_a_spec_error(minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["block"]["mlp"] = {"ratio": 1e308}
    with pytest.raises(SpecError):
        load_spec(doc)


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


# ---------------------------------------------------------------------------- attention variants


def test_linear_attention_with_sliding_window(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    dec_attention(doc).update(kind="linear", mask={"kind": "sliding_window", "window": 4})
    spec_error(
        doc,
        "nodes.dec.block.attention.mask",
        r"^linear attention supports the masks none and causal \(plus padding\); "
        r"no kernel computes sliding_window with it$",
    )


@pytest.mark.parametrize(
    "mask", [{"kind": "prefix", "prefix_len": 4}, {"kind": "block_local", "block": 4}]
)
def test_linear_attention_with_other_masks(spec_error, minimal_gpt, mask: Doc) -> None:
    doc = minimal_gpt()
    dec_attention(doc).update(kind="linear", mask=mask)
    spec_error(
        doc, "nodes.dec.block.attention.mask", rf"no kernel computes {mask['kind']} with it$"
    )


@pytest.mark.parametrize("position", ["rotary", "alibi", "relative_bias"])
def test_linear_attention_with_an_in_attention_position(
    spec_error, minimal_gpt, position: str
) -> None:
    doc = minimal_gpt()
    dec_attention(doc).update(kind="linear", position=position)
    spec_error(
        doc,
        "nodes.dec.block.attention.position",
        rf"^linear attention takes no in-attention position \({position}\); "
        r"add a 'position' node before the stack instead$",
    )


@pytest.mark.parametrize("mask", ["none", "causal", None])
def test_linear_attention_with_supported_masks(minimal_gpt, mask: str | None) -> None:
    doc = minimal_gpt()
    dec_attention(doc).update(kind="linear", mask=mask)
    plan = graph_of(doc).nodes["dec"].stack.layers[0].attention
    assert plan.kind == "linear"
    assert plan.mask.kind == (mask or "causal")


def test_rotary_over_an_odd_head_dim(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    dec_attention(doc).update(head_dim=33, position="rotary")
    spec_error(
        doc,
        "nodes.dec.block.attention.position",
        r"^rotary needs an even number of dimensions, but fraction 1\.0 of head_dim 33 is 33$",
    )


@pytest.mark.parametrize(("fraction", "rotated"), [(0.3, 5), (0.01, 0)])
def test_rotary_fraction_giving_odd_or_no_dims(
    spec_error, minimal_gpt, fraction: float, rotated: int
) -> None:
    doc = minimal_gpt()
    dec_attention(doc)["position"] = {"kind": "rotary", "fraction": fraction}
    spec_error(
        doc,
        "nodes.dec.block.attention.position",
        rf"fraction {fraction} of head_dim 16 is {rotated}$",
    )


def test_partial_rotary_with_an_even_count(minimal_gpt) -> None:
    doc = minimal_gpt()
    dec_attention(doc)["position"] = {"kind": "rotary", "fraction": 0.25}
    graph_of(doc)


def test_relative_bias_layers_with_different_head_counts(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    dec_attention(doc)["position"] = "relative_bias"
    doc["nodes"]["dec"]["overrides"] = [{"layers": [1], "attention": {"heads": 8}}]
    spec_error(
        doc,
        "nodes.dec.overrides.0.attention.position",
        r"^layers sharing the stack's relative_bias table need equal settings and head counts: "
        r"layer 1 has 8 heads .* an earlier layer 4 heads",
    )


def test_relative_bias_layers_with_different_buckets(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    dec_attention(doc)["position"] = "relative_bias"
    doc["nodes"]["dec"]["overrides"] = [{"layers": [1], "attention": {"position": {"buckets": 16}}}]
    spec_error(
        doc,
        "nodes.dec.overrides.0.attention.position",
        r"'buckets': 16.*an earlier layer 4 heads and \{'buckets': 32",
    )


def test_relative_bias_table_is_shared_when_only_some_layers_use_it(minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["nodes"]["dec"]["depth"] = 3
    doc["nodes"]["dec"]["overrides"] = [
        {"layers": [0, 2], "attention": {"position": "relative_bias"}}
    ]
    stack = graph_of(doc).nodes["dec"].stack
    assert stack.relative_bias is not None
    assert stack.relative_bias_heads == 4
    assert [layer.attention.position is not None for layer in stack.layers] == [True, False, True]


def test_cross_attention_without_memory(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["nodes"]["dec"]["block"]["cross_attention"] = {"heads": 4}
    spec_error(
        doc,
        "nodes.dec.block.cross_attention",
        r"^cross_attention is set, but the decoder has no 'memory' to attend to$",
    )


def test_cross_attention_without_memory_in_an_override(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["nodes"]["dec"]["overrides"] = [{"layers": [1], "cross_attention": {"heads": 2}}]
    spec_error(doc, "nodes.dec.overrides.0.cross_attention", r"no 'memory' to attend to$")


def test_cross_attention_refusals(minimal_gpt) -> None:
    doc = with_memory(minimal_gpt())
    doc["nodes"]["dec"]["block"]["cross_attention"] = {
        "mask": "causal",
        "position": "rotary",
        "kind": "linear",
    }
    with pytest.raises(SpecError) as exc:
        load_spec(doc)
    assert dict(exc.value.errors) == {
        "nodes.dec.block.cross_attention.mask": "cross-attention sees the whole memory (plus its "
        "padding); mask causal is not supported",
        "nodes.dec.block.cross_attention.position": "cross-attention takes no in-attention "
        "position (rotary)",
        "nodes.dec.block.cross_attention.kind": "linear cross-attention is not supported; use softmax",
    }


def test_cross_attention_defaults_follow_the_attention(minimal_gpt) -> None:
    doc = with_memory(minimal_gpt())
    dec_attention(doc).update(kv_heads=2, bias=False, position="rotary")
    layer = graph_of(doc).nodes["dec"].stack.layers[0]
    cross = layer.cross_attention
    assert (cross.heads, cross.kv_heads, cross.head_dim, cross.bias) == (4, 2, 16, False)
    assert cross.mask == NoMask(kind="none")
    assert cross.position is None
    assert (cross.dim, cross.kv_dim) == (64, 32)
    assert layer.attention.kv_dim is None


def test_cross_attention_heads_reset_kv_heads(minimal_gpt) -> None:
    doc = with_memory(minimal_gpt())
    dec_attention(doc)["kv_heads"] = 2
    doc["nodes"]["dec"]["block"]["cross_attention"] = {"heads": 8}
    cross = graph_of(doc).nodes["dec"].stack.layers[0].cross_attention
    assert (cross.heads, cross.kv_heads, cross.head_dim) == (8, 8, 8)


def test_memory_pointing_at_a_pooled_node(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["inputs"]["src"] = {"kind": "features", "dim": 32, "max_len": 10}
    doc["nodes"]["pooled"] = {"op": "pool", "input": "src"}
    doc["nodes"]["dec"]["memory"] = "pooled"
    spec_error(
        doc,
        "nodes.dec.memory",
        r"^decoder memory needs a token sequence, but 'pooled' is pooled vectors \(B, 32\)$",
    )


def test_memory_pointing_at_token_ids(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["nodes"]["dec"]["memory"] = "ids"
    spec_error(doc, "nodes.dec.memory", r"'ids' is a tokens input \(add an embed node first\)$")


# ----------------------------------------------------------------------------------- masks, pools


@pytest.mark.parametrize(
    ("stack", "mask", "expected"),
    [
        ("encoder", None, NoMask(kind="none")),
        ("decoder", None, CausalMask(kind="causal")),
        ("decoder", "none", NoMask(kind="none")),
        ("encoder", "causal", CausalMask(kind="causal")),
        ("decoder", {"kind": "sliding_window", "window": 4}, SlidingWindowMask(kind="sliding_window", window=4, causal=True)),
        ("encoder", {"kind": "sliding_window", "window": 4}, SlidingWindowMask(kind="sliding_window", window=4, causal=False)),
        ("encoder", {"kind": "sliding_window", "window": 4, "causal": True}, SlidingWindowMask(kind="sliding_window", window=4, causal=True)),
    ],
)  # fmt: skip
def test_masks_resolve_to_the_stacks_own(minimal_gpt, stack: str, mask: Any, expected: Any) -> None:
    doc = minimal_gpt()
    doc["nodes"]["dec"]["op"] = stack
    dec_attention(doc)["mask"] = mask
    graph = graph_of(doc)
    assert graph.nodes["dec"].stack.causal is (stack == "decoder")
    assert graph.nodes["dec"].stack.layers[0].attention.mask == expected


def test_pool_cls_without_cls_token(spec_error, minimal_vit) -> None:
    doc = without_cls(minimal_vit())
    doc["nodes"]["head"]["pool"] = "cls"
    spec_error(
        doc,
        "nodes.head.pool",
        r"^pool mode 'cls' needs a cls_token upstream, and there is none; use 'mean'$",
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


# ------------------------------------------------------------------------------------- positions


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


# ------------------------------------------------------------------------------ merges: add, concat


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


# ------------------------------------------------------------------------------------- overrides


def test_override_layers_out_of_range(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["overrides"] = [{"layers": [1, 5, 9], "mlp": {"ratio": 2}}]
    spec_error(
        doc,
        "nodes.enc.overrides.0.layers",
        r"^layer\(s\) \[5, 9\] outside the stack \(depth 4: layers 0-3\)$",
    )


def test_override_producing_an_invalid_block(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["overrides"] = [{"layers": "1-2", "attention": {"heads": -1}}]
    spec_error(
        doc,
        "nodes.enc.overrides.0.attention.heads",
        r"^input should be greater than 0 \(got -1\) \(in layers \[1, 2\]\)$",
    )


def test_override_with_a_mask_object_without_kind(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["overrides"] = [{"layers": [1], "attention": {"mask": {"window": 3}}}]
    spec_error(
        doc,
        "nodes.enc.overrides.0.attention.mask",
        r"'kind' is required here to say which kind of object this is \(in layers \[1\]\)$",
    )


def test_override_switching_mask_kind_starts_afresh(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    attention(doc)["mask"] = {"kind": "block_local", "block": 4}
    enc(doc)["overrides"] = [{"layers": [1], "attention": {"mask": {"kind": "sliding_window"}}}]
    spec_error(doc, "nodes.enc.overrides.0.attention.mask.window", r"^'window' is required")


def test_override_heads_not_dividing_the_width(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["overrides"] = [{"layers": [2], "attention": {"heads": 7}}]
    error = spec_error(
        doc,
        "nodes.enc.overrides.0.attention.heads",
        r"^7 heads do not divide dim 64 \(dim comes from nodes\.patches\.dim\)",
    )
    assert len(error.errors) == 1


def test_override_with_linear_attention_and_sliding_window(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["overrides"] = [
        {
            "layers": [3],
            "attention": {"kind": "linear", "mask": {"kind": "sliding_window", "window": 3}},
        }
    ]
    spec_error(doc, "nodes.enc.overrides.0.attention.mask", r"no kernel computes sliding_window")


def test_base_error_is_reported_once_at_the_base(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    attention(doc)["heads"] = 7
    enc(doc)["overrides"] = [
        {"layers": [1], "attention": {"dropout": 0.1}},
        {"layers": [2], "mlp": {"ratio": 2}},
    ]
    error = spec_error(doc, "nodes.enc.block.attention.heads", r"^7 heads do not divide dim 64")
    assert len(error.errors) == 1, error.errors


def test_two_overrides_with_the_same_mistake_are_both_reported(minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["overrides"] = [
        {"layers": [1], "attention": {"heads": 7}},
        {"layers": [3], "attention": {"heads": 7}},
    ]
    with pytest.raises(SpecError) as exc:
        load_spec(doc)
    assert {p for p, _ in exc.value.errors} == {
        "nodes.enc.overrides.0.attention.heads",
        "nodes.enc.overrides.1.attention.heads",
    }


def test_overlapping_overrides_merge_in_the_order_written(minimal_vit) -> None:
    doc = minimal_vit()
    attention(doc)["mask"] = {"kind": "block_local", "block": 4}
    enc(doc)["overrides"] = [
        {"layers": "0-2", "mlp": {"ratio": 2}},
        {"layers": [2], "attention": {"heads": 8, "mask": "none"}},
        {"layers": [2, 3], "attention": {"mask": {"kind": "block_local", "block": 8}}},
    ]
    layers = graph_of(doc).nodes["enc"].stack.layers
    assert [layer.override for layer in layers] == [0, 0, 2, 2]
    assert [layer.hidden for layer in layers] == [128, 128, 128, 256]
    assert [layer.attention.heads for layer in layers] == [4, 4, 8, 4]
    assert [layer.attention.mask.block for layer in layers] == [4, 4, 8, 8]


def test_overlapping_overrides_merging_into_an_invalid_block(spec_error, minimal_vit) -> None:
    doc = minimal_vit()
    attention(doc)["mask"] = {"kind": "block_local", "block": 4}
    enc(doc)["overrides"] = [
        {"layers": [1], "attention": {"mask": {"kind": "sliding_window", "window": 2}}},
        {"layers": [1, 2], "attention": {"mask": {"block": 8}}},  # valid alone, not after 0
    ]
    error = spec_error(
        doc,
        "nodes.enc.overrides.1",
        r"^layer 1: the overrides \[0, 1\] merge into an invalid block",
    )
    assert len(error.errors) == 1


def test_override_mask_kind_switch_replaces_the_object(minimal_vit) -> None:
    doc = minimal_vit()
    attention(doc)["mask"] = {"kind": "block_local", "block": 4}
    enc(doc)["overrides"] = [
        {"layers": [1], "attention": {"mask": {"kind": "sliding_window", "window": 3}}},
        {"layers": [2], "attention": {"mask": "causal"}},
        {"layers": [3], "attention": {"mask": {"block": 8}}},
    ]
    masks = [layer.attention.mask for layer in graph_of(doc).nodes["enc"].stack.layers]
    assert masks[1] == SlidingWindowMask(kind="sliding_window", window=3, causal=False)
    assert masks[2] == CausalMask(kind="causal")
    assert (masks[0].block, masks[3].block) == (4, 8)


def test_override_position_null_removes_it(minimal_gpt) -> None:
    doc = minimal_gpt()
    dec_attention(doc)["position"] = "rotary"
    doc["nodes"]["dec"]["overrides"] = [{"layers": [1], "attention": {"position": None}}]
    layers = graph_of(doc).nodes["dec"].stack.layers
    assert [layer.attention.position is None for layer in layers] == [False, True]


def test_drop_path_rises_linearly(minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["block"]["drop_path"] = 0.3
    layers = graph_of(doc).nodes["enc"].stack.layers
    assert [layer.drop_path for layer in layers] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    enc(doc)["depth"] = 1
    assert graph_of(doc).nodes["enc"].stack.layers[0].drop_path == 0.3


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


def test_two_cls_tokens(minimal_vit) -> None:
    doc = minimal_vit()
    doc["nodes"]["cls"]["count"] = 2
    shape = graph_of(doc).nodes["enc"].shape
    assert (shape.length, shape.n_cls, shape.patches) == (18, 2, 16)


def test_mlp_hidden_and_ratio(minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["block"]["mlp"] = {"ratio": 2.5}
    assert graph_of(doc).nodes["enc"].stack.layers[0].hidden == 160
    enc(doc)["block"]["mlp"] = {"ratio": 2.5, "hidden": 100}
    assert graph_of(doc).nodes["enc"].stack.layers[0].hidden == 100


# ---------------------------------------------------------------------------------- keep counts


@pytest.mark.parametrize(
    ("keep", "patches", "kept"),
    [(0.7, 10, 7), (0.7, 196, 138), (0.7, 138, 97), (0.7, 97, 68), (0.5, 3, 2), (1e-9, 5, 1), (1.0, 5, 5)],
)  # fmt: skip
def test_kept_tokens(keep: float, patches: int, kept: int) -> None:
    assert kept_tokens(keep, patches) == kept


def load_zoo(name: str) -> Graph:
    return graph_of(str(SPECS / f"{name}.json"))


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


# ------------------------------------------------------------------------------- expanded graph


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


# ------------------------------------------------------------------------------ module attributes


def test_module_attributes_cover_torch_nn_module() -> None:
    torch = pytest.importorskip("torch")
    public = {name for name in dir(torch.nn.Module) if not name.startswith("_")}
    assert public <= MODULE_ATTRIBUTES, sorted(public - MODULE_ATTRIBUTES)
    instance = torch.nn.Module()
    assert {n for n in vars(instance) if not n.startswith("_")} <= MODULE_ATTRIBUTES


@pytest.mark.parametrize("name", ["_modules", "_parameters", "_buffers", "_version"])
def test_node_id_equal_to_a_private_module_attribute(spec_error, minimal_vit, name: str) -> None:
    doc = minimal_vit()
    doc["nodes"][name] = doc["nodes"].pop("head")
    doc["outputs"] = name
    spec_error(doc, f"nodes.{name}", r"clashes with an attribute of the compiled nn.Module")


@pytest.mark.parametrize("name", ["__class__", "__dict__", "__v_head"])
def test_double_underscore_names_are_reserved(spec_error, minimal_vit, name: str) -> None:
    doc = minimal_vit()
    doc["nodes"][name] = doc["nodes"].pop("head")
    doc["outputs"] = name
    spec_error(doc, f"nodes.{name}", r"reserved for archlab's generated code")
    doc = minimal_vit()
    doc["inputs"][name] = doc["inputs"].pop("image")
    doc["nodes"]["patches"]["input"] = name
    spec_error(doc, f"inputs.{name}", r"reserved for archlab's generated code")


def test_module_attributes_include_the_compiled_models_own() -> None:
    assert {
        "spec",
        "graph",
        "summary",
        "spec_hash",
        "inputs",
        "outputs",
        "code",
    } <= MODULE_ATTRIBUTES


def test_feature_map_on_softmax_attention_is_refused(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    dec_attention(doc)["feature_map"] = "relu"
    spec_error(doc, "nodes.dec.block.attention.feature_map", r"belongs to linear attention")


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
