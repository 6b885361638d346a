"""``small_version``: a valid, small spec with the structure of the original, torch-free."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import archlab
from archlab.specs.analysis import AttentionPlan, Graph, ImageShape, SeqShape, analyze
from archlab.specs.shrink import small_version

ROOT = Path(__file__).parents[2]


def _graph(doc: dict[str, Any]) -> Graph:
    return analyze(archlab.load_spec(doc))


def _attention_kind(plan: AttentionPlan) -> tuple[Any, ...]:
    """What of an attention the small version must keep (not its sizes)."""
    if plan.kv_heads == plan.heads:
        grouping = "mha"
    elif plan.kv_heads == 1:
        grouping = "mqa"
    else:
        grouping = "gqa"
    mask = plan.mask.model_dump(exclude={"window", "block", "prefix_len"})
    position = plan.position.model_dump() if plan.position is not None else None
    return (plan.kind, grouping, json.dumps(mask, sort_keys=True), json.dumps(position),
            plan.dropout, plan.bias, plan.qk_norm, plan.kv_dim is None)  # fmt: skip


def _layer_kinds(graph: Graph, node_id: str) -> list[tuple[Any, ...]]:
    stack = graph.nodes[node_id].stack
    assert stack is not None
    kinds = []
    for layer in stack.layers:
        cross = layer.cross_attention
        stage = layer.prune
        kinds.append((
            _attention_kind(layer.attention),
            None if cross is None else _attention_kind(cross),
            layer.block.mlp.activation,
            layer.block.norm.model_dump_json(),
            None if stage is None else (stage.method, stage.keep, stage.fuse, stage.placement),
        ))  # fmt: skip
    return kinds


def test_small_version_keeps_the_structure(zoo_path: Path) -> None:
    doc = json.loads(zoo_path.read_text())
    before = copy.deepcopy(doc)
    small = small_version(doc)
    assert doc == before, "small_version changed its argument"
    big, little = _graph(doc), _graph(small)

    assert list(little.nodes) == list(big.nodes)
    for node_id, info in big.nodes.items():
        assert little.nodes[node_id].op == info.op
        assert little.nodes[node_id].inputs == info.inputs
    for node_id, info in big.nodes.items():
        if info.stack is None:
            continue
        kinds, small_kinds = _layer_kinds(big, node_id), _layer_kinds(little, node_id)
        # every kind of layer survives, in the order they first occur, and no new kind appears
        assert list(dict.fromkeys(small_kinds)) == list(dict.fromkeys(kinds))
        assert len(small_kinds) <= max(2, 1 + sum(k[-1] is not None for k in kinds))
        stages = [k[-1] for k in kinds if k[-1] is not None]
        assert [k[-1] for k in small_kinds if k[-1] is not None] == stages
        small_stack = little.nodes[node_id].stack
        assert small_stack is not None and small_stack.dim <= 64
        assert small_stack.causal == info.stack.causal
        assert (small_stack.memory is None) == (info.stack.memory is None)
        assert (small_stack.relative_bias is None) == (info.stack.relative_bias is None)

    for name, info in little.nodes.items():
        shape = info.shape
        if isinstance(shape, ImageShape):
            assert max(shape.height, shape.width) <= 32
        elif isinstance(shape, SeqShape) and info.op in ("input", "encoder", "decoder"):
            assert shape.length <= 32, name
    for spec_input in small["inputs"].values():
        assert spec_input.get("vocab_size", 0) <= 100
        assert spec_input.get("max_len", 0) <= 32


def test_small_version_is_small() -> None:
    from archlab.compiler import cost

    for path in sorted((ROOT / "specs").glob("*.json")):
        graph = _graph(small_version(json.loads(path.read_text())))
        params = sum(cost.node_cost(graph, n).params for n in graph.expanded)
        assert params < 300_000, (path.stem, params)


def test_small_version_renumbers_overrides_and_stages() -> None:
    doc = json.loads((ROOT / "specs/block-local-encoder.json").read_text())
    small = small_version(doc)
    encoder = small["nodes"]["encoder"]
    assert encoder["depth"] == 2
    assert encoder["overrides"] == [{"layers": [1], "attention": {"mask": "none"}}]
    assert encoder["block"]["attention"]["mask"] == {
        "kind": "block_local",
        "block": 8,
        "causal": False,
    }

    doc = json.loads((ROOT / "specs/dynamicvit-deit-s.json").read_text())
    small = small_version(doc)
    encoder = small["nodes"]["encoder"]
    assert (encoder["depth"], encoder["prune"]["at"]) == (4, [1, 2, 3])
    assert small["inputs"]["image"]["size"] == 32
    assert small["nodes"]["patches"]["patch_size"] == 8

    doc = json.loads((ROOT / "specs/llama-style.json").read_text())
    attention = small_version(doc)["nodes"]["decoder"]["block"]["attention"]
    assert (attention["heads"], attention["kv_heads"]) == (4, 2)
