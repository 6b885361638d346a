"""Spec -> checked graph with every shape inferred, before any weight exists.

``analyze(spec)`` resolves every default that depends on the graph (widths flowing along edges,
``position.max_len``, pooling modes, tied vocabularies, per-layer blocks with overrides merged,
masks and cross-attention settings, pruning keep counts), checks everything a spec can get wrong
across fields, and expands the ``prune`` shorthand into ``token_prune`` stages. All problems are
collected and raised together as one ``SpecError``.

The steps: names and references (``names``), then each node by its op's infer function
(``INFER``) in topological order, then the expanded graph (``expand``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from archlab.specs.analysis.context import Context
from archlab.specs.analysis.expand import expand
from archlab.specs.analysis.infer import INFER
from archlab.specs.analysis.names import data_graph
from archlab.specs.analysis.plans import NodeInfo
from archlab.specs.analysis.shapes import Shape, input_shape
from archlab.specs.models import Spec, node_inputs

if TYPE_CHECKING:
    import networkx as nx


@dataclass
class Graph:
    """The analysed spec: topological order, shapes, plans and the expanded networkx graph.

    ``expanded`` has one node per row of the model summary: a stack with ``prune`` becomes its
    layer segments and ``token_prune`` stages (``encoder.layers.0-2``, ``encoder.prune.3``, ...);
    ``alias`` maps each spec id to the expanded node that produces its output.
    """

    spec: Spec
    order: list[str]
    nodes: dict[str, NodeInfo]
    expanded: nx.DiGraph
    alias: dict[str, str]

    def shape(self, ref: str) -> Shape:
        return self.nodes[ref].shape

    def upstream(self, ref: str) -> list[str]:
        """``ref`` and every node and input it reads, directly or not, in graph order (inputs
        first)."""
        seen, todo = set(), [ref]
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(self.nodes[node].inputs)
        return [n for n in [*self.spec.inputs, *self.order] if n in seen]


def check_graph(spec: Spec, source: str | None = None) -> None:
    """Raise ``SpecError`` if the spec's graph has any problem (``load_spec`` calls this)."""
    analyze(spec, source)


def analyze(spec: Spec, source: str | None = None) -> Graph:
    """Check a spec's graph, infer every shape and resolve every default. Raises ``SpecError``."""
    ctx = Context(spec)
    graph = _run(ctx)
    ctx.errors.raise_if_any(source)
    assert graph is not None  # no errors means the graph was completed
    return graph


def _run(ctx: Context) -> Graph | None:
    import networkx as nx  # loaded on first analysis: importing archlab (`arch --help`) stays light

    spec = ctx.spec
    for name, inp in spec.inputs.items():
        ctx.infos[name] = NodeInfo(name, "input", inp, input_shape(name, inp))
    data = data_graph(spec, ctx.errors)
    if data is None:
        return None
    order = [n for n in nx.topological_sort(data) if n in spec.nodes]
    for node_id in order:
        node = spec.nodes[node_id]
        refs = node_inputs(node)
        if not all(r in ctx.infos for r in refs):
            continue  # an input failed to resolve; its own error is already reported
        info = INFER[node.op](ctx, node_id, node)
        if info is not None:
            info.inputs = refs
            ctx.infos[node_id] = info
    if ctx.errors:
        return None
    expanded, alias = expand(ctx.infos, order)
    return Graph(spec, order, ctx.infos, expanded, alias)
