"""``archlab.specs.overrides``: the one merge of a stack's block and its overrides."""

from __future__ import annotations

import pytest

from archlab.specs import parse_spec
from archlab.specs.models import EncoderNode
from archlab.specs.overrides import layer_block, merge_block, merged_block


def test_merge_block_merges_objects_key_by_key() -> None:
    base = {"attention": {"heads": 4, "mask": {"kind": "causal"}}, "dropout": 0.1}
    merged = merge_block(base, {"attention": {"heads": 8}})
    assert merged == {"attention": {"heads": 8, "mask": {"kind": "causal"}}, "dropout": 0.1}
    assert base["attention"]["heads"] == 4  # the base is left as it was


def test_merge_block_replaces_an_object_of_another_kind() -> None:
    base = {"attention": {"mask": {"kind": "sliding_window", "window": 4, "causal": True}}}
    merged = merge_block(base, {"attention": {"mask": {"kind": "causal"}}})
    assert merged == {"attention": {"mask": {"kind": "causal"}}}
    assert merge_block(base, {"attention": {"mask": "none"}}) == {"attention": {"mask": "none"}}


def stack(minimal_vit, overrides: list[dict], mask: dict | None = None) -> EncoderNode:
    doc = minimal_vit()
    doc["nodes"]["enc"]["depth"] = 3
    doc["nodes"]["enc"]["overrides"] = overrides
    if mask is not None:
        doc["nodes"]["enc"]["block"]["attention"]["mask"] = mask
    node = parse_spec(doc).nodes["enc"]  # checked one override at a time, not merged
    assert isinstance(node, EncoderNode)
    return node


def test_merged_block_applies_overrides_in_the_order_given(minimal_vit) -> None:
    node = stack(
        minimal_vit,
        [
            {"layers": [1, 2], "attention": {"heads": 2}, "dropout": 0.2},
            {"layers": [2], "attention": {"heads": 8}},
        ],
    )
    written = node.block.model_dump(mode="json", exclude_unset=True)
    assert merged_block(node, ()) == written
    assert merged_block(node, (0,))["attention"]["heads"] == 2
    assert merged_block(node, (0, 1))["attention"]["heads"] == 8
    assert merged_block(node, (1, 0))["attention"]["heads"] == 2
    assert merged_block(node, (0, 1))["dropout"] == 0.2


def test_layer_block_is_each_layers_merged_block(minimal_vit) -> None:
    node = stack(
        minimal_vit,
        [
            {"layers": [1, 2], "attention": {"heads": 2}},
            {"layers": [2], "attention": {"heads": 8}},
        ],
    )
    assert layer_block(node, 0) is node.block
    assert [layer_block(node, i).attention.heads for i in range(3)] == [4, 2, 8]


def test_layer_block_of_overrides_merging_into_an_invalid_block(minimal_vit) -> None:
    # each override alone is valid (loading checks that); together they are not
    node = stack(
        minimal_vit,
        [
            {"layers": [1], "attention": {"mask": {"kind": "sliding_window", "window": 2}}},
            {"layers": [1, 2], "attention": {"mask": {"block": 8}}},
        ],
        mask={"kind": "block_local", "block": 4},
    )
    assert layer_block(node, 2).attention.mask.block == 8  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="block"):
        layer_block(node, 1)
