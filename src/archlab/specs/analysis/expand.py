"""The expanded graph: one node per row of the model summary.

A stack with pruning stages becomes its layer segments and ``token_prune`` stages
(``encoder.layers.0-2``, ``encoder.prune.3``, ...); every other node stays itself. ``alias``
maps each spec id to the expanded node that produces its output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from archlab.specs.analysis.plans import NodeInfo, StackPlan
from archlab.specs.analysis.pruning import any_dynamic, pruned_shape
from archlab.specs.analysis.shapes import SeqShape

if TYPE_CHECKING:
    import networkx as nx

#: An expanded node: its id and its attributes (``op``, ``shape``, ``spec_id``, and ``stage``
#: for a stage, ``layers`` for a segment of a stack).
Piece = tuple[str, dict[str, Any]]


def expand(infos: Mapping[str, NodeInfo], order: list[str]) -> tuple[nx.DiGraph, dict[str, str]]:
    """The expanded graph of the analysed nodes ``infos`` (spec nodes in topological ``order``)
    and the alias of each spec id."""
    import networkx as nx  # loaded on first analysis: importing archlab (`arch --help`) stays light

    g = nx.DiGraph()
    alias: dict[str, str] = {}
    for name, info in infos.items():
        if info.op == "input":
            g.add_node(name, op="input", shape=info.shape, spec_id=name)
            alias[name] = name
    for node_id in order:
        info = infos[node_id]
        preds = [alias[r] for r in info.inputs]
        stack = info.stack
        if stack is None or not stack.stages:
            g.add_node(node_id, op=info.op, shape=info.shape, spec_id=node_id)
            for p in preds:
                g.add_edge(p, node_id)
            alias[node_id] = node_id
            continue
        seq = infos[info.inputs[0]].shape
        assert isinstance(seq, SeqShape)
        prev, extra = preds[0], preds[1:]  # the data, then the memory of a decoder
        for piece_id, attrs in _pieces(node_id, stack, seq):
            g.add_node(piece_id, **attrs)
            g.add_edge(prev, piece_id)
            if attrs["op"] == info.op:
                for p in extra:
                    g.add_edge(p, piece_id)
            prev = piece_id
        alias[node_id] = prev
    return g, alias


def _pieces(node_id: str, stack: StackPlan, seq: SeqShape) -> list[Piece]:
    """A pruned stack reading ``seq``, in order: segments of layers and the stages between."""
    pieces: list[Piece] = []
    dynamic = any_dynamic(stack.stages)
    segment_start = 0
    for layer in stack.layers:
        stage = layer.prune
        if stage is None:
            continue
        end = layer.index - 1 if stage.placement == "before" else layer.index
        if end >= segment_start:
            pieces.append(_segment(node_id, segment_start, end, stack, seq))
        shape = pruned_shape(seq, stage.tokens_after, dynamic, stage=True)
        attrs = {"op": "token_prune", "shape": shape, "spec_id": node_id, "stage": stage}
        pieces.append((f"{node_id}.prune.{layer.index}", attrs))
        segment_start = end + 1
    if segment_start < len(stack.layers):
        pieces.append(_segment(node_id, segment_start, len(stack.layers) - 1, stack, seq))
    return pieces


def _segment(node_id: str, start: int, end: int, stack: StackPlan, seq: SeqShape) -> Piece:
    """Layers ``start`` to ``end`` of a pruned stack, as one expanded node."""
    last = stack.layers[end]
    span = f"{start}-{end}" if end > start else f"{start}"
    shape = pruned_shape(seq, last.tokens_mlp, any_dynamic(stack.stages))
    attrs = {"op": stack.op, "shape": shape, "spec_id": node_id, "layers": (start, end)}
    return f"{node_id}.layers.{span}", attrs
