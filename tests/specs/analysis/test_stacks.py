"""``archlab.specs.analysis.stacks``: heads and widths, attention variants, cross-attention, masks,
overrides merged layer by layer, and drop-path rates, with the paths their errors name."""

from __future__ import annotations

from typing import Any

import pytest
from analysis_testing import (
    Doc,
    attention,
    dec_attention,
    enc,
    graph_of,
    with_memory,
    with_second_tokens,
)

from archlab import SpecError, load_spec
from archlab.specs.models import CausalMask, NoMask, SlidingWindowMask

# ----------------------------------------------------------------------------------------- inputs


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


# ----------------------------------------------------------------------------- attention variants


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


# ------------------------------------------------------------------------------------------ masks


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


# -------------------------------------------------------------------------------------- overrides


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


# ------------------------------------------------------------------------------ mlp, feature maps


def test_mlp_hidden_and_ratio(minimal_vit) -> None:
    doc = minimal_vit()
    enc(doc)["block"]["mlp"] = {"ratio": 2.5}
    assert graph_of(doc).nodes["enc"].stack.layers[0].hidden == 160
    enc(doc)["block"]["mlp"] = {"ratio": 2.5, "hidden": 100}
    assert graph_of(doc).nodes["enc"].stack.layers[0].hidden == 100


def test_feature_map_on_softmax_attention_is_refused(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    dec_attention(doc)["feature_map"] = "relu"
    spec_error(doc, "nodes.dec.block.attention.feature_map", r"belongs to linear attention")


def test_scale_on_linear_attention_is_refused(spec_error, minimal_gpt) -> None:
    doc = minimal_gpt()
    dec_attention(doc).update({"kind": "linear", "scale": 1.0})
    spec_error(doc, "nodes.dec.block.attention.scale", r"linear attention has no score scale")


def test_cross_attention_inherits_the_scale(minimal_gpt) -> None:
    doc = minimal_gpt()
    doc["inputs"]["src"] = {"kind": "tokens", "vocab_size": 100, "max_len": 32}
    doc["nodes"]["src_tok"] = {"op": "embed", "input": "src", "tie": "tok"}
    doc["nodes"]["dec"]["memory"] = "src_tok"
    dec_attention(doc)["scale"] = 1.0
    layer = graph_of(doc).nodes["dec"].stack.layers[0]
    assert layer.attention.scale == layer.cross_attention.scale == 1.0
