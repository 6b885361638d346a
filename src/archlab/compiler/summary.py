"""What a compiled model reports about itself: per-node shapes, parameters, FLOPs and kernels."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from archlab.compiler.cost import node_cost
from archlab.specs.analysis import Graph, Shape


@dataclass(frozen=True)
class NodeRow:
    """One row per node of the expanded graph (a pruned stack is several rows)."""

    id: str
    op: str
    shape: list[str | int]
    params: int
    flops: int
    kernel: str | None = None
    kernel_reason: str | None = None
    tokens: int | None = None  # sequence length leaving the node, for token sequences

    @property
    def macs(self) -> int:
        return self.flops // 2


@dataclass(frozen=True)
class Summary:
    """``params`` (total), ``flops`` (per sample, forward; a multiply-add counts 2), ``macs``.

    ``nodes`` lists every node of the expanded graph in execution order. ``kernels`` lists the
    attention kernel choices of the whole model with the reason for each. For a pruned spec,
    ``pruning`` lists its stages with their token counts and ``dense_flops`` the FLOPs without
    them (``flops_saved`` the fraction saved). ``paths`` lists the performance paths the built
    model takes (weights' dtype, fused projections, mask-free kernels, ...) and why.
    """

    name: str | None
    spec_hash: str
    params: int
    flops: int
    nodes: list[NodeRow]
    outputs: dict[str, list[str | int]]
    weight_bytes: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    kernels: list[dict[str, str]] = field(default_factory=list)
    pruning: list[dict[str, Any]] = field(default_factory=list)
    paths: list[dict[str, Any]] = field(default_factory=list)  # compiler/paths.py
    dense_flops: int | None = None  # FLOPs of the spec without its pruning stages

    @property
    def macs(self) -> int:
        return self.flops // 2

    @property
    def flops_saved(self) -> float | None:
        """The fraction of the dense spec's FLOPs pruning saves (None for a dense spec)."""
        if self.dense_flops is None or not self.dense_flops:
            return None
        return 1.0 - self.flops / self.dense_flops

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: keys ``params``, ``flops``, ``macs``, ``nodes`` (each with ``id``), ..."""
        out = asdict(self)
        out["macs"] = self.macs
        out["flops_saved"] = self.flops_saved
        for row, node in zip(self.nodes, out["nodes"], strict=True):
            node["macs"] = row.macs
        return out


def shape_list(shape: Shape) -> list[str | int]:
    """``(B, 197, 384)`` as ``["B", 197, 384]``."""
    return ["B", *shape.dims]


def build_rows(graph: Graph, kernels: dict[str, tuple[str, str]]) -> list[NodeRow]:
    """Rows of the expanded graph; ``kernels`` maps an expanded node id to (kernel, reason)."""
    import networkx as nx

    rows = []
    for node_id in nx.topological_sort(graph.expanded):
        attrs = graph.expanded.nodes[node_id]
        if attrs["op"] == "input":
            continue
        cost = node_cost(graph, node_id)
        kernel, reason = kernels.get(node_id, (None, None))
        shape = attrs["shape"]
        rows.append(
            NodeRow(
                node_id,
                attrs["op"],
                shape_list(shape),
                cost.params,
                cost.flops,
                kernel,
                reason,
                getattr(shape, "length", None) if attrs["op"] not in ("classify", "pool") else None,
            )
        )
    return rows
