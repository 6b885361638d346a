"""Parameters and forward FLOPs of every node, from the analysed graph alone (no torch).

Conventions (see docs/spec-reference.md):
- ``params`` counts trainable tensors once; a tied weight belongs to the embedding it ties to.
- ``flops`` counts a multiply-add as 2, like ``torch.utils.flop_counter.FlopCounterMode``: matrix
  products (linear layers, convolutions, attention scores and values), per sample, at the inputs'
  ``max_len`` and at inference shapes (after pruning). Element-wise work (norms, softmax,
  activations) is not counted, as FlopCounterMode does not count it. Attention is counted dense
  (T x S), also under causal or windowed masks.
- ``macs`` = ``flops / 2``: the multiply-adds vision papers quote as "FLOPs" (DeiT-S: 4.6 G).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from archlab.specs.analysis import (
    AttentionPlan,
    ClassifyPlan,
    EmbedPlan,
    Graph,
    ImageShape,
    LayerPlan,
    LMHeadPlan,
    NodeInfo,
    PositionPlan,
    PruneStage,
    SeqShape,
    StackPlan,
)
from archlab.specs.models import GATED_ACTIVATIONS

#: Chunk length of causal linear attention (prefix sums across chunks, quadratic inside one).
LINEAR_CHUNK = 64


@dataclass(frozen=True)
class Cost:
    params: int
    flops: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.flops + other.flops)


ZERO = Cost(0, 0)


def linear(n_in: int, n_out: int, bias: bool, tokens: int = 1) -> Cost:
    return Cost(n_in * n_out + (n_out if bias else 0), 2 * tokens * n_in * n_out)


def norm_params(kind: str, dim: int) -> int:
    return 2 * dim if kind == "layernorm" else dim


def attention_cost(plan: AttentionPlan, tokens: int, keys: int) -> Cost:
    """One attention layer: projections plus the score and value products for all heads."""
    H, K, E, D = plan.heads, plan.kv_heads, plan.head_dim, plan.dim
    kv_in = plan.kv_dim if plan.kv_dim is not None else D
    cost = linear(D, H * E, plan.bias, tokens) + linear(kv_in, 2 * K * E, plan.bias, keys)
    cost += linear(H * E, D, plan.bias, tokens)
    if plan.qk_norm:
        cost += Cost(2 * norm_params(plan.norm_kind, E), 0)
    if plan.kind == "softmax":
        return cost + Cost(0, 4 * H * tokens * keys * E)
    causal = plan.mask.kind == "causal"
    if not causal:
        # phi(K)^T V, then phi(Q) (phi(K)^T V) and the normaliser phi(Q) . sum phi(K)
        return cost + Cost(0, H * (2 * keys * E * E + 2 * tokens * E * E + 2 * tokens * E))
    chunk = min(LINEAR_CHUNK, tokens)
    n_chunks = -(-tokens // chunk)
    padded = n_chunks * chunk
    # inside each chunk: masked scores and their product with V; across chunks: the state update
    # phi(K_c)^T V_c and its read-out phi(Q_c) S, with the normaliser's read-out
    intra = 4 * padded * chunk * E
    inter = 2 * padded * E * E * 2 + 2 * padded * E
    return cost + Cost(0, H * (intra + inter))


def mlp_cost(dim: int, hidden: int, activation: str, bias: bool, tokens: int) -> Cost:
    gated = activation in GATED_ACTIVATIONS
    return linear(dim, (2 if gated else 1) * hidden, bias, tokens) + linear(
        hidden, dim, bias, tokens
    )


def layer_cost(stack: StackPlan, layer: LayerPlan) -> Cost:
    """One layer of a stack (its pruning stage, if any, is a node of its own)."""
    D, block = stack.dim, layer.block
    n = norm_params(block.norm.kind, D)
    cost = attention_cost(layer.attention, layer.tokens, layer.tokens) + Cost(2 * n, 0)
    if layer.cross_attention is not None:
        assert stack.memory_shape is not None
        cost += attention_cost(
            layer.cross_attention, layer.tokens, stack.memory_shape.length
        ) + Cost(n, 0)
    cost += mlp_cost(D, layer.hidden, block.mlp.activation, block.mlp.bias, layer.tokens_mlp)
    if block.layer_scale is not None:
        branches = 3 if layer.cross_attention is not None else 2
        cost += Cost(branches * D, 0)
    return cost


def dynamic_cost(stage: PruneStage) -> Cost:
    """DynamicViT's predictor: LayerNorm, C -> C, then C -> C/2 -> C/4 -> 2 on the patch tokens."""
    C, patches = stage.dim, stage.tokens_before - stage.n_cls
    c2, c4 = C // 2, C // 4
    return (
        Cost(2 * C, 0)
        + linear(C, C, True, patches)
        + linear(C, c2, True, patches)
        + linear(c2, c4, True, patches)
        + linear(c4, 2, True, patches)
    )


def merge_cost(stage: PruneStage) -> Cost:
    """ToMe: similarity of the two token sets' keys (averaged over heads)."""
    patches = stage.tokens_before - stage.n_cls
    a, b = -(-patches // 2), patches // 2
    return Cost(0, 2 * a * b * (stage.head_dim or stage.dim))


#: The cost of one pruning stage at inference, by method (EViT's top-k is not counted).
PRUNE_COST: dict[str, Callable[[PruneStage], Cost]] = {
    "dynamic": dynamic_cost,
    "attention_topk": lambda stage: ZERO,
    "merge": merge_cost,
}


def prune_cost(stage: PruneStage) -> Cost:
    """Parameters and FLOPs of one pruning stage at inference."""
    return PRUNE_COST[stage.method](stage)


def stack_segment_cost(stack: StackPlan, start: int, end: int) -> Cost:
    cost = ZERO
    for layer in stack.layers[start : end + 1]:
        cost += layer_cost(stack, layer)
    if stack.relative_bias is not None and start == 0:
        assert stack.relative_bias_heads is not None
        cost += Cost(stack.relative_bias.buckets * stack.relative_bias_heads, 0)
    return cost


def node_cost(graph: Graph, node_id: str) -> Cost:
    """Cost of one node of ``graph.expanded`` (a spec node, a stack segment or a pruning stage)."""
    attrs = graph.expanded.nodes[node_id]
    if attrs["op"] == "input":
        return ZERO
    return COST[attrs["op"]](graph, graph.nodes[attrs["spec_id"]], attrs)


# One function per op: (graph, the spec node's info, the expanded node's attributes) -> Cost.
# A stack's expanded nodes are its layer segments (``layers``: first and last index) and its
# pruning stages (op ``token_prune``, ``stage``: the stage), both with the stack's info.
CostFn = Callable[[Graph, NodeInfo, Mapping[str, Any]], Cost]


def free_cost(graph: Graph, info: NodeInfo, attrs: Mapping[str, Any]) -> Cost:
    """No parameters and no counted FLOPs: pool, add, average, concat, dropout."""
    return ZERO


def embed_cost(graph: Graph, info: NodeInfo, attrs: Mapping[str, Any]) -> Cost:
    embed = info.plan_as(EmbedPlan)
    vocab, dim = embed.vocab, embed.dim
    return Cost(0 if info.spec.tie is not None else vocab * dim, 0)


def patch_embed_cost(graph: Graph, info: NodeInfo, attrs: Mapping[str, Any]) -> Cost:
    node, shape = info.spec, info.shape
    image = graph.nodes[node.input].shape
    assert isinstance(image, ImageShape) and isinstance(shape, SeqShape)
    ph, pw = node.patch_size
    return linear(image.channels * ph * pw, shape.dim, True, shape.length)


def cls_token_cost(graph: Graph, info: NodeInfo, attrs: Mapping[str, Any]) -> Cost:
    assert isinstance(info.shape, SeqShape)
    return Cost(info.spec.count * info.shape.dim, 0)


def position_cost(graph: Graph, info: NodeInfo, attrs: Mapping[str, Any]) -> Cost:
    assert isinstance(info.shape, SeqShape)
    learned = info.spec.encoding == "learned"
    return Cost(info.plan_as(PositionPlan).max_len * info.shape.dim if learned else 0, 0)


def stack_cost(graph: Graph, info: NodeInfo, attrs: Mapping[str, Any]) -> Cost:
    """An encoder or decoder, or one segment of its layers."""
    assert info.stack is not None
    start, end = attrs.get("layers", (0, len(info.stack.layers) - 1))
    return stack_segment_cost(info.stack, start, end)


def token_prune_cost(graph: Graph, info: NodeInfo, attrs: Mapping[str, Any]) -> Cost:
    """A ``token_prune`` node, or a stage of a stack's ``prune``."""
    stage = attrs.get("stage", info.prune)
    assert stage is not None
    return prune_cost(stage)


def norm_cost(graph: Graph, info: NodeInfo, attrs: Mapping[str, Any]) -> Cost:
    return Cost(norm_params(info.spec.kind, info.shape.dim), 0)  # type: ignore[union-attr]


def classify_cost(graph: Graph, info: NodeInfo, attrs: Mapping[str, Any]) -> Cost:
    """The classifier, after its pre-logits layer when it has one."""
    plan = info.plan_as(ClassifyPlan)
    if plan.pre_logits is None or plan.pre_logits.dim is None:
        return linear(plan.in_dim, info.spec.classes, True)
    width = plan.pre_logits.dim
    return linear(plan.in_dim, width, True) + linear(width, info.spec.classes, True)


def lm_head_cost(graph: Graph, info: NodeInfo, attrs: Mapping[str, Any]) -> Cost:
    shape = info.shape
    assert isinstance(shape, SeqShape)
    tied = info.spec.tie is not None
    head = linear(info.plan_as(LMHeadPlan).in_dim, shape.dim, False, shape.length)
    return Cost(0 if tied else head.params, head.flops)


COST: dict[str, CostFn] = {
    "embed": embed_cost,
    "patch_embed": patch_embed_cost,
    "cls_token": cls_token_cost,
    "position": position_cost,
    "encoder": stack_cost,
    "decoder": stack_cost,
    "token_prune": token_prune_cost,
    "norm": norm_cost,
    "pool": free_cost,
    "classify": classify_cost,
    "lm_head": lm_head_cost,
    "add": free_cost,
    "average": free_cost,
    "concat": free_cost,
    "dropout": free_cost,
}
