"""Helpers for the pruning stage tests: tiny ViT specs with pruning, compiled and fed images."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from archlab import compile_spec
from archlab.compiler.model import CompiledModel
from archlab.compiler.nn.pruning import AttentionTopK, DynamicPrune, TokenMerge

Doc = dict[str, Any]
PATCHES = 16  # 8x8 images in 2x2 patches
DIM, HEADS = 32, 2
DYNAMIC = {"method": "dynamic", "at": [1, 2], "keep": 0.7}
TOPK = {"method": "attention_topk", "at": [1, 2], "keep": 0.5, "fuse": True}
MERGE = {"method": "merge", "at": [0, 1, 2], "r": 4}
METHODS = {"dynamic": DYNAMIC, "attention_topk": TOPK, "merge": MERGE}


def vit(prune: Doc | None = None, *, depth: int = 4, count: int = 1, **block: Any) -> Doc:
    """8x8 images -> 16 patches of width 32 -> `count` CLS tokens -> learned positions -> encoder."""
    attention = {"heads": HEADS, **block.pop("attention", {})}
    encoder: Doc = {
        "op": "encoder",
        "input": "pos",
        "depth": depth,
        "block": {"attention": attention, **block},
    }
    if prune is not None:
        encoder["prune"] = copy.deepcopy(prune)
    return {
        "version": 1,
        "name": "prune-vit",
        "inputs": {"image": {"kind": "image", "channels": 1, "size": 8}},
        "nodes": {
            "patches": {"op": "patch_embed", "input": "image", "dim": DIM, "patch_size": 2},
            "cls": {"op": "cls_token", "input": "patches", "count": count},
            "pos": {"op": "position", "input": "cls", "encoding": "learned"},
            "encoder": encoder,
            "head": {"op": "classify", "input": "encoder", "pool": "cls", "classes": 10},
        },
        "outputs": "head",
    }


def features_model(prune: Doc) -> Doc:
    """Padded feature sequences (up to 12 tokens of width 32) -> CLS -> a 3-layer encoder."""
    return {
        "version": 1,
        "inputs": {"x": {"kind": "features", "dim": DIM, "max_len": 12}},
        "nodes": {
            "cls": {"op": "cls_token", "input": "x"},
            "enc": {
                "op": "encoder",
                "input": "cls",
                "depth": 3,
                "block": {"attention": {"heads": HEADS}},
                "prune": prune,
            },
            "head": {"op": "classify", "input": "enc", "classes": 3},
        },
        "outputs": "head",
    }


def build(spec: Doc, train: bool = False) -> CompiledModel:
    model = compile_spec(spec, seed=0)
    return model.train(train)


def images(batch: int = 2) -> Tensor:
    return torch.randn(batch, 1, 8, 8)


def record_stage_calls(model: CompiledModel) -> tuple[list[tuple[str, tuple, tuple]], Callable]:
    """Forward hooks on every pruning stage: (name, args, output) per call; call the 2nd to remove."""
    calls: list[tuple[str, tuple, tuple]] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, DynamicPrune | AttentionTopK | TokenMerge):
            handles.append(
                module.register_forward_hook(
                    lambda m, args, out, name=name: calls.append((name, args, out))
                )
            )

    def remove() -> None:
        for handle in handles:
            handle.remove()

    return calls, remove


def dynamic_between_stacks(block: Doc | None = None, prune: Doc | None = None) -> Doc:
    """Two stacks with an explicit `dynamic` token_prune node (keep 0.5) between them; `block`
    and `prune` shape the second stack."""
    spec = vit(depth=2)
    spec["nodes"]["tp"] = {
        "op": "token_prune",
        "input": "encoder",
        "method": "dynamic",
        "keep": 0.5,
    }
    enc2: Doc = {
        "op": "encoder",
        "input": "tp",
        "depth": 2,
        "block": block or {"attention": {"heads": HEADS}},
    }
    if prune is not None:
        enc2["prune"] = prune
    spec["nodes"]["enc2"] = enc2
    spec["nodes"]["head"]["input"] = "enc2"
    return spec


# explicit `token_prune` nodes of every method: the stacks after them, in training and inference

NODE_SETTINGS: dict[str, Doc] = {
    "dynamic": {"keep": 0.5},  # 16 -> 8 patches
    "attention_topk": {"keep": 0.5, "fuse": True},  # 16 -> 8 + 1 fused
    "merge": {"r": 4},  # 16 -> 12
}
ENC1: Doc = {"op": "encoder", "depth": 1, "block": {"attention": {"heads": HEADS}}}


#: what follows the node `tp`: the nodes (each reading the previous one) up to the head's input
TAILS: dict[str, list[tuple[str, Doc]]] = {
    "stack": [("enc2", ENC1)],
    "two-stacks": [("enc2", ENC1), ("enc3", ENC1)],
    "norm-between": [("enc2", ENC1), ("ln", {"op": "norm"}), ("enc3", ENC1)],
    "dynamic-between": [
        ("enc2", ENC1),
        ("tp2", {"op": "token_prune", "method": "dynamic", "keep": 0.5}),
        ("enc3", ENC1),
    ],
}


def explicit_node(method: str, tail: str) -> Doc:
    """encoder (2 layers) -> `tp`, a `token_prune` node of `method` -> the nodes of TAILS[tail]
    -> the head (CLS pooling)."""
    spec = vit(depth=2)
    nodes = spec["nodes"]
    nodes["tp"] = {"op": "token_prune", "input": "encoder", "method": method}
    nodes["tp"].update(NODE_SETTINGS[method])
    previous = "tp"
    for node_id, node in TAILS[tail]:
        nodes[node_id] = {**copy.deepcopy(node), "input": previous}
        previous = node_id
    nodes["head"]["input"] = previous
    return spec
