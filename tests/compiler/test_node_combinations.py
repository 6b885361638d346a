"""Node combinations the spec reference documents and the zoo does not use, zoo-style.

Each small spec below validates, compiles, runs forward and backward, and has its summary's
parameter count equal to the module's: the zoo test (``test_zoo.py``) for the nodes no zoo file
holds (``pool``, ``add``, ``average``, ``concat``, ``token_prune`` nodes, ``merge`` pruning,
``qk_norm``, ``layer_scale``), in training mode.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import archlab


def _image(nodes: dict[str, Any], outputs: str | list[str]) -> dict[str, Any]:
    return {
        "version": 1,
        "inputs": {"img": {"kind": "image", "channels": 1, "size": 8}},
        "nodes": {"patches": {"op": "patch_embed", "input": "img", "dim": 16, "patch_size": 2}}
        | nodes,
        "outputs": outputs,
    }


def _text(nodes: dict[str, Any], outputs: str | list[str], **inputs: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "inputs": {
            "ids": {"kind": "tokens", "vocab_size": 20, "max_len": 8, "pad_id": 0},
            **inputs,
        },
        "nodes": nodes,
        "outputs": outputs,
    }


ENC = {"op": "encoder", "depth": 1, "block": {"attention": {"heads": 2}}}

COMBINATIONS: dict[str, dict[str, Any]] = {
    # the reference's classify input "vectors from a pool node"
    "pool_cls_then_classify": _image(
        {
            "cls": {"op": "cls_token", "input": "patches"},
            "enc": {**ENC, "input": "cls"},
            "pooled": {"op": "pool", "input": "enc"},
            "head": {"op": "classify", "input": "pooled", "classes": 3},
        },
        "head",
    ),
    # the reference's average example: DeiT's distilled heads, on the CLS and distillation tokens
    "distilled_heads_averaged": _image(
        {
            "cls": {"op": "cls_token", "input": "patches", "count": 2},
            "enc": {**ENC, "input": "cls"},
            "head": {"op": "classify", "input": "enc", "classes": 3, "pool": "cls"},
            "head_dist": {"op": "classify", "input": "enc", "classes": 3, "pool": "distill"},
            "logits": {"op": "average", "inputs": ["head", "head_dist"]},
        },
        "logits",
    ),
    "pool_mean_norm_dropout_classify": _image(
        {
            "enc": {**ENC, "input": "patches"},
            "pooled": {"op": "pool", "input": "enc", "mode": "mean"},
            "ln": {"op": "norm", "input": "pooled", "kind": "rmsnorm"},
            "drop": {"op": "dropout", "input": "ln", "p": 0.1},
            "head": {"op": "classify", "input": "drop", "classes": 3},
        },
        "head",
    ),
    "pool_max_and_last_added_then_classify": _text(
        {
            "tok": {"op": "embed", "input": "ids", "dim": 16},
            "enc": {**ENC, "input": "tok"},
            "pmax": {"op": "pool", "input": "enc", "mode": "max"},
            "plast": {"op": "pool", "input": "enc", "mode": "last"},
            "both": {"op": "add", "inputs": ["pmax", "plast"]},
            "head": {"op": "classify", "input": "both", "classes": 2},
        },
        ["head", "pmax"],
    ),
    # the reference's add example: a segment embedding added to a token embedding
    "add_segment_embedding": _text(
        {
            "tok": {"op": "embed", "input": "ids", "dim": 16},
            "seg": {"op": "embed", "input": "segments", "dim": 16},
            "sum": {"op": "add", "inputs": ["tok", "seg"]},
            "pos": {"op": "position", "input": "sum", "encoding": "learned"},
            "enc": {**ENC, "input": "pos"},
            "head": {"op": "classify", "input": "enc", "classes": 2, "pool": "mean"},
        },
        "head",
        segments={"kind": "tokens", "vocab_size": 2, "max_len": 8},
    ),
    "concat_sequence_of_features_then_pool": {
        "version": 1,
        "inputs": {
            "a": {"kind": "features", "dim": 16, "max_len": 6},
            "b": {"kind": "features", "dim": 16, "max_len": 4},
        },
        "nodes": {
            "both": {"op": "concat", "inputs": ["a", "b"]},
            "pos": {"op": "position", "input": "both", "encoding": "sinusoidal"},
            "enc": {**ENC, "input": "pos"},
            "pooled": {"op": "pool", "input": "enc"},
            "head": {"op": "classify", "input": "pooled", "classes": 4},
        },
        "outputs": "head",
    },
    "concat_feature_axis_into_decoder": _text(
        {
            "tok": {"op": "embed", "input": "ids", "dim": 8},
            "tok2": {"op": "embed", "input": "ids", "dim": 8},
            "wide": {"op": "concat", "inputs": ["tok", "tok2"], "axis": "feature"},
            "dec": {
                "op": "decoder",
                "input": "wide",
                "depth": 1,
                "block": {"attention": {"heads": 2, "qk_norm": True}, "layer_scale": 0.1},
            },
            "logits": {"op": "lm_head", "input": "dec", "vocab_size": 20},
        },
        "logits",
    ),
    "explicit_token_prune_and_merge": _image(
        {
            "cls": {"op": "cls_token", "input": "patches"},
            "enc": {
                **ENC,
                "input": "cls",
                "depth": 2,
                "prune": {"method": "merge", "r": 2, "at": [0]},
            },
            "prune": {"op": "token_prune", "input": "enc", "method": "attention_topk", "keep": 0.5},
            "enc2": {**ENC, "input": "prune"},
            "pooled": {"op": "pool", "input": "enc2", "mode": "cls"},
            "head": {"op": "classify", "input": "pooled", "classes": 3},
        },
        "head",
    ),
    # a dynamic token_prune node between stacks: in training DynamicViT keeps every token, so
    # every later stack (not only the first) sees the full sequence under the policy
    "explicit_dynamic_token_prune_before_two_stacks": _image(
        {
            "cls": {"op": "cls_token", "input": "patches"},
            "enc": {**ENC, "input": "cls"},
            "prune": {"op": "token_prune", "input": "enc", "method": "dynamic", "keep": 0.7},
            "enc2": {**ENC, "input": "prune"},
            "ln": {"op": "norm", "input": "enc2"},
            "enc3": {**ENC, "input": "ln"},
            "head": {"op": "classify", "input": "enc3", "classes": 3, "pool": "cls"},
        },
        "head",
    ),
}


@pytest.mark.parametrize("name", sorted(COMBINATIONS))
def test_documented_combination_compiles_and_runs(name: str) -> None:
    spec = COMBINATIONS[name]
    model = archlab.compile_spec(spec, seed=0)
    summary = model.summary()
    assert summary.params == sum(p.numel() for p in model.parameters())
    model.train()
    out = model(**model.example_inputs(batch=2))
    outs = out if isinstance(out, dict) else {spec["outputs"]: out}
    for node_id, value in outs.items():
        row = next(r for r in summary.nodes if r.id == node_id)
        assert tuple(value.shape) == (2, *row.shape[1:]), node_id
        assert torch.isfinite(value).all(), node_id
    sum(v.float().square().mean() for v in outs.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
