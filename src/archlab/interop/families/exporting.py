"""What every family's export side shares: reading a spec document's parts for messages, and
comparing a spec with the one its exported config converts back to."""

from __future__ import annotations

import json
from typing import Any


def describe_node(node: dict[str, Any]) -> str:
    """A node for a message: its op, and its kind or encoding if it has one."""
    detail = node.get("encoding") or node.get("kind")
    return f"op {node['op']!r}" + (f" ({detail})" if isinstance(detail, str) else "")


def training_only(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc``'s nodes and inputs with dropout (training only) and the spec's words left out."""
    nodes = json.loads(json.dumps(doc["nodes"]))
    for node in nodes.values():
        block = node.get("block") if isinstance(node, dict) else None
        if isinstance(block, dict):
            block["dropout"] = block["drop_path"] = 0.0
            for part in ("attention", "mlp"):
                if isinstance(block.get(part), dict):
                    block[part]["dropout"] = 0.0
    return {"inputs": doc["inputs"], "nodes": nodes, "outputs": doc["outputs"]}


def differences(ours: Any, theirs: Any, path: str) -> list[tuple[str, Any, Any]]:
    """Every (path, ours, theirs) where two JSON documents differ, leaf by leaf."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = []
        for key in sorted(set(ours) | set(theirs)):
            out += differences(ours.get(key), theirs.get(key), f"{path}.{key}")
        return out
    return [] if ours == theirs else [(path, ours, theirs)]


__all__ = ["describe_node", "differences", "training_only"]
