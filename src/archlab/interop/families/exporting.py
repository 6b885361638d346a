"""What every family's export side shares: reading a spec document's parts for messages, and
comparing a spec with the one its exported config converts back to."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from torch import Tensor


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


def renamed_differences(
    ours: dict[str, Any],
    back: dict[str, Any],
    nodes: Mapping[str, tuple[str, dict[str, Any]]],
    inputs: Mapping[str, str],
    family: str,
) -> list[str]:
    """What differs between a spec (``ours``) and the one its exported config converts back to
    (``back``), part by part under the family's names: ``nodes`` maps our node id to theirs and
    the wiring to compare as theirs (inputs, ties), ``inputs`` our input names to theirs."""
    found = []
    for old, (new, wiring) in nodes.items():
        node = {**ours["nodes"][old], **wiring}
        found += differences(node, back["nodes"][new], f"nodes.{old}")
    for mine, theirs in inputs.items():
        found += differences(ours["inputs"][mine], back["inputs"][theirs], f"inputs.{mine}")
    return [f"{where}: {value!r}; {family} has {wanted!r}" for where, value, wanted in found]


def chain_to_output(
    doc: dict[str, Any], problems: list[str], family: str
) -> tuple[str, list[str]] | None:
    """The input and the node ids from it to the spec's single output, in order (dropout
    included), for a family whose models are one chain of single-input nodes; None, with the
    problem added, when the spec is not such a chain."""
    nodes, outputs = doc["nodes"], doc["outputs"]
    if len(outputs) != 1:
        problems.append(f"outputs: {len(outputs)} outputs; a {family} model has one")
        return None
    path: list[str] = []
    current = outputs[0]
    while current in nodes and len(path) <= len(nodes):
        path.append(current)
        source = nodes[current].get("input")
        if not isinstance(source, str):
            problems.append(f"nodes.{current}: {describe_node(nodes[current])} has several inputs")
            return None
        current = source
    return current, path[::-1]


def cpu_copies(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous CPU copies of exported tensors (safetensors writes them; the model keeps its own)."""
    return {name: t.detach().to("cpu", copy=True).contiguous() for name, t in tensors.items()}


__all__ = [
    "chain_to_output",
    "cpu_copies",
    "describe_node",
    "differences",
    "renamed_differences",
    "training_only",
]
