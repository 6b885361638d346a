"""The meaning of a spec: its graph checked, every shape inferred and every default resolved,
before any weight exists (``analyze``). Imports no torch: ``arch validate`` and ``spec_hash``
run it.

Modules: ``shapes`` (the values between nodes), ``plans`` (what each op resolved, ``NodeInfo``),
``names`` (identifiers, references, cycles, unused nodes), ``infer`` (one function per op, the
``INFER`` table), ``stacks`` (encoder and decoder layers, attention), ``pruning`` (keep counts,
stages), ``expand`` (the graph the summary lists), ``graph`` (``Graph``, ``analyze``).
"""

from archlab.specs.analysis.graph import Graph, analyze, check_graph
from archlab.specs.analysis.infer import INFER, InferFn
from archlab.specs.analysis.names import MODULE_ATTRIBUTES
from archlab.specs.analysis.plans import (
    PASS_THROUGH_OPS,
    AttentionPlan,
    ClassifyPlan,
    EmbedPlan,
    LayerPlan,
    LMHeadPlan,
    NodeInfo,
    NodePlan,
    PoolPlan,
    PositionPlan,
    PruneStage,
    StackPlan,
    upstream_through,
)
from archlab.specs.analysis.pruning import (
    graph_prune_methods,
    has_pruning,
    kept_tokens,
    prune_methods,
)
from archlab.specs.analysis.shapes import (
    ImageShape,
    SeqShape,
    Shape,
    TokensShape,
    VecShape,
    same_size,
)

__all__ = [
    "INFER",
    "MODULE_ATTRIBUTES",
    "PASS_THROUGH_OPS",
    "AttentionPlan",
    "ClassifyPlan",
    "EmbedPlan",
    "Graph",
    "ImageShape",
    "InferFn",
    "LMHeadPlan",
    "LayerPlan",
    "NodeInfo",
    "NodePlan",
    "PoolPlan",
    "PositionPlan",
    "PruneStage",
    "SeqShape",
    "Shape",
    "StackPlan",
    "TokensShape",
    "VecShape",
    "analyze",
    "check_graph",
    "graph_prune_methods",
    "has_pruning",
    "kept_tokens",
    "prune_methods",
    "same_size",
    "upstream_through",
]
