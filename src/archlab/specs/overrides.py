"""A stack's per-layer blocks: its ``block`` with the layer's overrides deep-merged in.

``merged_block`` is the one place overrides are merged: ``load.check_overrides`` checks each
override merged alone (so an error points at it), and the analysis builds every layer's block
from all the overrides that cover it, in the order written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from archlab.specs.models import Block, StackNode


def merge_block(base: Mapping[str, Any], partial: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge a partial block into a block (both as JSON dicts).

    Objects merge key by key, except that an object whose ``kind`` differs, or a string form,
    replaces what was there (switching a mask from causal to a sliding window starts afresh).
    """
    out = dict(base)
    for key, value in partial.items():
        old = out.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            if "kind" in value and "kind" in old and value["kind"] != old["kind"]:
                out[key] = dict(value)
            else:
                out[key] = merge_block(old, value)
        else:
            out[key] = value
    return out


def merged_block(node: StackNode, owners: Sequence[int]) -> dict[str, Any]:
    """The stack's ``block`` as written (a JSON dict) with the overrides ``owners`` (indices into
    ``node.overrides``) merged in, in that order."""
    merged = node.block.model_dump(mode="json", exclude_unset=True)
    for k in owners:
        merged = merge_block(merged, node.overrides[k].partial)
    return merged


def layer_block(node: StackNode, layer: int) -> Block:
    """The block of layer ``layer``: the stack's ``block`` with the overrides covering the layer
    merged in. Raises ``ValueError`` (pydantic's) when they merge into an invalid block."""
    owners = node.layer_overrides[layer]
    return Block.model_validate(merged_block(node, owners)) if owners else node.block


__all__ = ["layer_block", "merge_block", "merged_block"]
