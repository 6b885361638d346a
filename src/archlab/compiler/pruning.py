"""Token pruning as the compiler reports it: each stage's token counts, and what it saves.

``dense_spec`` removes a spec's pruning stages (the dense model DynamicViT distils from, and the
baseline ``arch compile`` compares against); ``pruning_stages`` lists the stages of an analysed
graph with their token counts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from archlab.compiler.cost import node_cost
from archlab.specs import load_spec
from archlab.specs.analysis import PASS_THROUGH_OPS, Graph, analyze
from archlab.specs.models import Spec


@dataclass(frozen=True)
class StageRow:
    """One pruning stage: where it acts and the tokens (CLS included) before and after it."""

    id: str
    method: str
    placement: str
    tokens_before: int
    tokens_after: int
    n_cls: int
    kept_of_original: float  # patch tokens after the stage / patch tokens entering the model

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "placement": self.placement,
            "tokens_before": self.tokens_before,
            "tokens_after": self.tokens_after,
            "n_cls": self.n_cls,
            "kept_of_original": self.kept_of_original,
        }


def pruning_stages(graph: Graph) -> list[StageRow]:
    """Every pruning stage of ``graph`` in execution order (empty for a dense spec)."""
    import networkx as nx

    rows: list[StageRow] = []
    original: int | None = None
    for node_id in nx.topological_sort(graph.expanded):
        attrs = graph.expanded.nodes[node_id]
        stage = attrs.get("stage")
        if stage is None and attrs["op"] == "token_prune":
            stage = graph.nodes[attrs["spec_id"]].prune
        if stage is None:
            continue
        if original is None:
            original = stage.tokens_before - stage.n_cls
        rows.append(
            StageRow(
                node_id,
                stage.method,
                stage.placement,
                stage.tokens_before,
                stage.tokens_after,
                stage.n_cls,
                (stage.tokens_after - stage.n_cls) / max(original, 1),
            )
        )
    return rows


def state_carriers(graph: Graph) -> set[str]:
    """The nodes whose output carries the pruning state (a DynamicViT policy, ToMe sizes, the
    trace): ``token_prune`` nodes, encoders and decoders that run a pruning stage or take a
    carried sequence, and the norm and dropout nodes after them. The compiled model runs those
    stacks with the state (``Stack.forward_tokens``); the one rule for both."""
    carries: set[str] = set()
    for node_id in graph.order:
        info = graph.nodes[node_id]
        fed = bool(info.inputs) and info.inputs[0] in carries
        if (
            info.op == "token_prune"
            or (fed and info.op in PASS_THROUGH_OPS)
            or (info.stack is not None and (info.stack.stages or fed))
        ):
            carries.add(node_id)
    return carries


def pruned_stacks(graph: Graph) -> list[str]:
    """The encoders and decoders that run a pruning stage or take a pruned sequence (after a
    ``token_prune`` node or a pruned stack, through norm and dropout), in execution order: those
    the compiled model runs with the pruning state (``state_carriers``)."""
    carries = state_carriers(graph)
    return [n for n in graph.order if graph.nodes[n].stack is not None and n in carries]


def dense_flops(spec: Spec) -> int:
    """Forward FLOPs per sample of ``spec`` without its pruning stages."""
    graph = analyze(dense_spec(spec))
    return sum(node_cost(graph, n).flops for n in graph.expanded)


def dense_spec(spec: Spec) -> Spec:
    """The spec without its pruning stages: ``prune`` dropped from stacks, ``token_prune`` nodes
    bypassed (their consumers read the node's input). Named ``<name>-dense``."""
    doc = spec.model_dump(mode="json", exclude_none=True, by_alias=True)
    nodes: dict[str, Any] = doc["nodes"]
    bypass = {nid: n["input"] for nid, n in nodes.items() if n.get("op") == "token_prune"}

    def through(ref: str) -> str:
        while ref in bypass:
            ref = bypass[ref]
        return ref

    kept: dict[str, Any] = {}
    for nid, node in nodes.items():
        if nid in bypass:
            continue
        node = copy.deepcopy(node)
        node.pop("prune", None)
        for key in ("input", "memory"):
            if isinstance(node.get(key), str):
                node[key] = through(node[key])
        if isinstance(node.get("inputs"), list):
            node["inputs"] = [through(r) for r in node["inputs"]]
        kept[nid] = node
    doc["nodes"] = kept
    outputs = doc["outputs"]
    doc["outputs"] = (
        [through(o) for o in outputs] if isinstance(outputs, list) else through(outputs)
    )
    if doc.get("name"):
        doc["name"] = f"{doc['name']}-dense"
    return load_spec(doc)


__all__ = [
    "StageRow",
    "dense_flops",
    "dense_spec",
    "pruned_stacks",
    "pruning_stages",
    "state_carriers",
]
