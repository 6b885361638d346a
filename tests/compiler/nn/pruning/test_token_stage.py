"""Pruning stages of every method in compiled models (``pruning.stage``): keep counts against the
shape inference, the orders and layers the compiler refuses, padded inputs, and one graph for
``torch.compile``."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from pruning_testing import (
    DIM,
    DYNAMIC,
    ENC1,
    HEADS,
    MERGE,
    NODE_SETTINGS,
    PATCHES,
    TOPK,
    Doc,
    build,
    dynamic_between_stacks,
    explicit_node,
    features_model,
    images,
    record_stage_calls,
    vit,
)

from archlab import SpecError, compile_spec


def expected_patches(prune: Doc, patches: int = PATCHES) -> list[int]:
    """Patch tokens after each stage, from the spec-language rules written out once more."""
    after = []
    for _ in prune["at"]:
        if prune["method"] == "merge":
            patches -= min(prune["r"], patches // 2)
        else:
            kept = max(1, math.ceil(round(prune["keep"] * patches, 9)))
            fused = prune.get("fuse", False) and kept < patches
            patches = kept + fused
        after.append(patches)
    return after


def check_spec_error(spec: Doc, path: str, *fragments: str) -> SpecError:
    with pytest.raises(SpecError) as exc:
        compile_spec(spec)
    messages = [m for p, m in exc.value.errors if p == path]
    assert messages, f"no error at {path}: {exc.value.errors}"
    assert any(all(f in m for f in fragments) for m in messages), (
        f"no message at {path} has {fragments}: {messages}"
    )
    return exc.value


# ------------------------------------------------------------------------------------ keep counts


@pytest.mark.parametrize(
    ("prune", "after"),
    [
        (DYNAMIC, [12, 9]),  # ceil(0.7 * 16), ceil(0.7 * 12)
        ({**TOPK, "fuse": False, "keep": 0.7}, [12, 9]),
        (TOPK, [8 + 1, 5 + 1]),  # the fused token counts as a patch at the next stage
        (MERGE, [12, 8, 4]),
        ({**MERGE, "r": 6}, [10, 5, 3]),  # capped at half the patches present
        ({"method": "dynamic", "at": [0, 1, 2, 3], "keep": 0.1}, [2, 1, 1, 1]),  # at least 1
    ],
    ids=["dynamic", "topk", "topk-fused", "merge", "merge-capped", "dynamic-floor"],
)
@pytest.mark.parametrize("count", [1, 2])
def test_keep_counts_follow_the_schedule_and_the_shape_inference(
    prune: Doc, after: list[int], count: int
) -> None:
    assert expected_patches(prune) == after
    model = build(vit(prune, count=count))
    names = [f"encoder.prune.{i}" for i in prune["at"]]
    # run without a trace too: the plain forward shortens the sequence just the same
    calls, remove = record_stage_calls(model)
    with torch.no_grad():
        model(images())
        out, trace = model.trace_tokens(images())
    remove()
    lengths = [output[0].shape[1] for _, _, output in calls]
    assert lengths == [count + a for a in after] * 2
    assert [name for name, _, _ in calls] == names * 2

    assert [r.name for r in trace.stages] == names
    assert [r.n_cls for r in trace.stages] == [count] * len(names)
    assert [r.index.shape[1] for r in trace.stages] == [count + a for a in after]
    if prune["method"] == "merge":  # a merged token stands for several patches, none is gone
        assert all(trace.kept(r).all() for r in trace.stages)
    elif not prune.get("fuse"):
        assert [trace.kept(r).sum(1).tolist() for r in trace.stages] == [[a, a] for a in after]

    rows = {row.id: row.tokens for row in model.summary().nodes}
    assert [rows[name] for name in names] == [count + a for a in after]
    plan = model.graph.nodes["encoder"]
    assert [s.tokens_after for s in plan.stack.stages] == [count + a for a in after]
    assert plan.shape.length == count + after[-1]
    assert trace.features["encoder"].shape == (2, count + after[-1], DIM)
    assert out.shape == (2, 10)
    for layer in plan.stack.layers:  # the layer plans' counts are what the layers really see
        if layer.prune is not None:
            i = prune["at"].index(layer.index)
            before = count + (PATCHES if i == 0 else after[i - 1])
            seen = (layer.tokens, layer.tokens_mlp)
            if layer.prune.placement == "before":
                assert seen == (count + after[i], count + after[i])
            else:
                assert seen == (before, count + after[i])


@pytest.mark.parametrize("method", ["attention_topk", "merge"])
def test_evit_and_tome_may_not_follow_a_dynamic_stage(method: str) -> None:
    """In training DynamicViT keeps the dropped tokens (masked): a later EViT/ToMe stage would
    score, fuse or merge them as if alive, so the compiler refuses the order."""
    settings = {"keep": 0.5} if method == "attention_topk" else {"r": 2}
    spec = vit(DYNAMIC)
    spec["nodes"]["tp"] = {"op": "token_prune", "input": "encoder", "method": method, **settings}
    spec["nodes"]["head"]["input"] = "tp"
    with pytest.raises(SpecError, match=f"{method} cannot follow a dynamic stage"):
        build(spec)
    spec = dynamic_between_stacks(prune={"method": method, "at": [1], **settings})
    with pytest.raises(SpecError, match="cannot follow a dynamic stage"):
        build(spec)


def test_keep_one_is_the_dense_model() -> None:
    """keep 1.0: DynamicViT only reorders the patches, EViT keeps them as they are."""
    x = images()
    dense = build(vit())
    with torch.no_grad():
        expected = dense(x)
        for method in ("dynamic", "attention_topk"):
            model = build(vit({"method": method, "at": [1, 3], "keep": 1.0}))
            missing, unexpected = model.load_state_dict(dense.state_dict(), strict=False)
            assert not unexpected and all(".predictor." in k for k in missing)
            torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)


SEQUENCE_AFTER_DYNAMIC: dict[str, tuple[Doc, str]] = {
    "add": ({"op": "add", "inputs": ["tp", "tp"]}, "nodes.x.inputs"),
    "concat": ({"op": "concat", "inputs": ["tp", "tp"]}, "nodes.x.inputs"),
    "cls_token": ({"op": "cls_token", "input": "tp"}, "nodes.x.input"),
    "memory": (
        {"op": "decoder", "input": "pos", "memory": "tp", "depth": 1, "block": ENC1["block"]},
        "nodes.x.memory",
    ),
}


@pytest.mark.parametrize("case", sorted(SEQUENCE_AFTER_DYNAMIC))
def test_nodes_that_would_drop_a_dynamic_policy_are_refused(case: str) -> None:
    """Only norm, dropout, stacks and token_prune nodes carry DynamicViT's training policy: any
    other node combining or extending the sequence would let the dropped tokens count again in
    training (and in the next stack's attention), so the compiler refuses it."""
    node, path = SEQUENCE_AFTER_DYNAMIC[case]
    spec = explicit_node("dynamic", "stack")
    spec["nodes"]["x"] = node
    spec["nodes"]["enc2"]["input"] = "x"
    check_spec_error(spec, path, "'tp' passed a dynamic pruning stage", "policy")


@pytest.mark.parametrize("method", sorted(NODE_SETTINGS))
def test_a_position_node_after_a_pruning_stage_is_refused(method: str) -> None:
    spec = explicit_node(method, "stack")
    spec["nodes"]["pos2"] = {"op": "position", "input": "tp", "encoding": "learned"}
    spec["nodes"]["enc2"]["input"] = "pos2"
    check_spec_error(spec, "nodes.pos2.input", "'tp' passed a token pruning stage", "positions")


@pytest.mark.parametrize(
    "prune",
    [
        {"method": "dynamic", "at": [1], "keep": 0.5},
        {"method": "attention_topk", "at": [1], "keep": 0.5, "fuse": True},
    ],
    ids=["dynamic", "attention_topk"],
)
def test_padded_models_keep_the_real_tokens(prune: Doc) -> None:
    model = build(features_model(prune))
    x = torch.randn(2, 12, DIM)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, 4:] = False  # 4 real tokens < k = 6
    mask[1, 9:] = False  # 9 real tokens
    with torch.no_grad():
        out, trace = model.trace_tokens(x=x, x_mask=mask)
        plain = model(x=x, x_mask=mask)
    torch.testing.assert_close(out, plain, rtol=0, atol=0)
    assert torch.isfinite(out).all()
    (record,) = trace.stages
    real = set(range(1, 5))
    index = record.index[:, 1 : 1 + 6]
    assert real <= set(index[0].tolist())
    assert set(index[1].tolist()) <= set(range(1, 10))
    # a padded token's features cannot change the output
    moved = x.clone()
    moved[0, 4:] += 50.0
    moved[1, 9:] -= 50.0
    with torch.no_grad():
        torch.testing.assert_close(model(x=moved, x_mask=mask), out, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("position", ["rotary", "alibi", "relative_bias"])
def test_positions_in_layers_that_see_pruned_tokens_are_refused(position: str) -> None:
    spec = vit(DYNAMIC, attention={"position": position})
    with pytest.raises(SpecError) as exc:
        compile_spec(spec)
    messages = [m for p, m in exc.value.errors if p == "nodes.encoder.block.attention"]
    for layer in (1, 2, 3):  # dynamic runs before layer 1: it and every later layer see pruned
        assert any(m.startswith(f"layer {layer} sees pruned tokens") for m in messages), messages
        assert any(position in m for m in messages)
    assert not any(m.startswith("layer 0 ") for m in messages)


def test_a_position_in_one_late_layer_is_refused_at_its_override() -> None:
    spec = vit({"method": "attention_topk", "at": [1], "keep": 0.5})
    spec["nodes"]["encoder"]["overrides"] = [{"layers": [3], "attention": {"position": "alibi"}}]
    check_spec_error(spec, "nodes.encoder.overrides.0.attention", "layer 3", "alibi")


def test_positions_before_the_pruned_layers_are_fine() -> None:
    # EViT/ToMe act inside layer 1, after its attention: layers 0 and 1 see every token in place
    spec = vit({"method": "attention_topk", "at": [1], "keep": 0.5})
    spec["nodes"]["encoder"]["overrides"] = [{"layers": "0-1", "attention": {"position": "rotary"}}]
    build(spec)
    # DynamicViT runs before layer 1: layer 1 already sees pruned tokens
    spec = vit({"method": "dynamic", "at": [1], "keep": 0.5})
    spec["nodes"]["encoder"]["overrides"] = [{"layers": "0-1", "attention": {"position": "rotary"}}]
    check_spec_error(spec, "nodes.encoder.overrides.0.attention", "layer 1", "rotary")


@pytest.mark.parametrize("mask", ["causal", {"kind": "sliding_window", "window": 4}])
def test_structural_masks_after_pruning_are_refused(mask: Any) -> None:
    spec = vit(MERGE, attention={"mask": mask})
    kind = mask if isinstance(mask, str) else mask["kind"]
    check_spec_error(spec, "nodes.encoder.block.attention", "layer 1", f"{kind} mask")


def test_a_stack_after_a_token_prune_node_is_checked_from_its_first_layer() -> None:
    spec = dynamic_between_stacks(block={"attention": {"heads": HEADS, "position": "rotary"}})
    check_spec_error(spec, "nodes.enc2.block.attention", "layer 0 sees pruned tokens", "rotary")
    spec["nodes"]["enc2"]["block"]["attention"] = {"heads": HEADS, "mask": "causal"}
    check_spec_error(spec, "nodes.enc2.block.attention", "layer 0 sees pruned tokens", "causal")


def test_attention_topk_without_a_cls_token_is_refused() -> None:
    spec = vit({"method": "attention_topk", "at": [1], "keep": 0.5})
    del spec["nodes"]["cls"]
    spec["nodes"]["pos"]["input"] = "patches"
    spec["nodes"]["head"]["pool"] = "mean"
    check_spec_error(spec, "nodes.encoder.prune.method", "no cls_token is upstream")
    spec["nodes"]["encoder"].pop("prune")
    spec["nodes"]["tp"] = {
        "op": "token_prune",
        "input": "encoder",
        "method": "attention_topk",
        "keep": 0.5,
    }
    spec["nodes"]["head"]["input"] = "tp"
    check_spec_error(spec, "nodes.tp.method", "no cls_token is upstream")


@pytest.mark.parametrize(
    "prune",
    [
        {"method": "dynamic", "at": [1, 2], "keep": 0.7},
        {"method": "attention_topk", "at": [1], "keep": 0.5, "fuse": True},
        {"method": "merge", "at": [0, 1, 2], "r": 2},
    ],
    ids=["dynamic", "evit", "tome"],
)
def test_pruned_models_trace_without_graph_breaks(prune: Doc) -> None:
    """torch.compile sees one graph: static keep counts, no host synchronisation."""
    model = build(vit(prune))
    x = images(2)
    for training in (False, True):
        model.train(training)
        torch._dynamo.reset()
        explained = torch._dynamo.explain(model)(x, **{"__trace": True})
        assert explained.graph_break_count == 0, explained.break_reasons
