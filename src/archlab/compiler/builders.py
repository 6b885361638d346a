"""Analysed node -> ``nn.Module``: one builder function per op, found in ``BUILD`` by the op.

Builders are torchtune-style: they build the parts (attention, MLP, norms, stages) and hand them
to the blocks of ``compiler.nn``. What several builders share (the graph, the device and dtype the
attention kernels are chosen for, a forced kernel, the modules built so far for tied weights)
travels in one ``BuildContext``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from archlab.compiler.errors import CompileError
from archlab.compiler.nn.attention import KERNELS, Attention, choose_kernel, kernel_problem
from archlab.compiler.nn.attention_position import (
    AlibiPosition,
    AttentionPosition,
    NoPosition,
    RelativeBiasPosition,
    RotaryPosition,
)
from archlab.compiler.nn.bias import RelativePositionBias
from archlab.compiler.nn.block import Block
from archlab.compiler.nn.combine import Add, Average, Concat
from archlab.compiler.nn.embeddings import ClsToken, PatchEmbedding, TokenEmbedding
from archlab.compiler.nn.heads import Classify, LMHead, Pool
from archlab.compiler.nn.linear_attention import LinearAttention
from archlab.compiler.nn.masks import MaskPattern
from archlab.compiler.nn.mlp import Mlp
from archlab.compiler.nn.norms import make_norm
from archlab.compiler.nn.positions import LearnedPosition, SinCos2dPosition, SinusoidalPosition
from archlab.compiler.nn.pruning import STAGES, TokenStage
from archlab.compiler.nn.rotary import RotaryEmbedding
from archlab.compiler.nn.stack import Stack
from archlab.specs.analysis import (
    AttentionPlan,
    ClassifyPlan,
    EmbedPlan,
    Graph,
    ImageShape,
    LayerPlan,
    LMHeadPlan,
    NodeInfo,
    PoolPlan,
    PositionPlan,
    PruneStage,
    SeqShape,
    StackPlan,
    VecShape,
)
from archlab.specs.models import (
    BlockLocalMask,
    ClassifyNode,
    ConcatNode,
    DropoutNode,
    EmbedNode,
    Mask,
    NormNode,
    PatchEmbedNode,
    PositionNode,
    PrefixMask,
    RelativeBias,
    Rotary,
    SlidingWindowMask,
)


@dataclass
class BuildContext:
    """What the builders of one model share: the analysed graph, where the model will run (the
    attention kernels are chosen for it), a forced kernel, and the modules built so far."""

    graph: Graph
    device: torch.device
    dtype: torch.dtype | None
    kernel_override: str | None = None
    built: dict[str, nn.Module] = field(default_factory=dict)


BuildFn = Callable[[BuildContext, NodeInfo], nn.Module]


def build_node(ctx: BuildContext, node_id: str) -> nn.Module:
    """The module of node ``node_id`` (built after the nodes it reads, as ``graph.order`` is)."""
    info = ctx.graph.nodes[node_id]
    module = BUILD[info.op](ctx, info)
    ctx.built[node_id] = module
    return module


# ------------------------------------------------------------------------- embeddings and heads


def build_embed(ctx: BuildContext, info: NodeInfo) -> nn.Module:
    node: EmbedNode = info.spec
    plan = info.plan_as(EmbedPlan)
    module = TokenEmbedding(plan.vocab, plan.dim, scale=node.scale)
    if node.tie is not None:
        root = ctx.built[plan.tie_root]
        assert isinstance(root, TokenEmbedding)
        module.weight = root.weight  # shared: the state dict stores it once per name
    return module


def build_patch_embed(ctx: BuildContext, info: NodeInfo) -> nn.Module:
    node: PatchEmbedNode = info.spec
    image = ctx.graph.shape(node.input)
    assert isinstance(image, ImageShape)
    return PatchEmbedding(image.channels, node.dim, *node.patch_size)


def build_cls_token(ctx: BuildContext, info: NodeInfo) -> nn.Module:
    return ClsToken(info.spec.count, _dim(info.shape))


def build_position(ctx: BuildContext, info: NodeInfo) -> nn.Module:
    node: PositionNode = info.spec
    seq = info.shape
    assert isinstance(seq, SeqShape)
    if node.encoding == "learned":
        return LearnedPosition(info.plan_as(PositionPlan).max_len, seq.dim)
    if node.encoding == "sinusoidal":
        return SinusoidalPosition(info.plan_as(PositionPlan).max_len, seq.dim)
    assert seq.grid is not None
    return SinCos2dPosition(seq.grid[0], seq.grid[1], seq.dim, n_cls=seq.n_cls)


def build_norm(ctx: BuildContext, info: NodeInfo) -> nn.Module:
    node: NormNode = info.spec
    return make_norm(node.kind, _dim(info.shape), node.eps)


def build_pool(ctx: BuildContext, info: NodeInfo) -> nn.Module:
    plan = info.plan_as(PoolPlan)
    return Pool(plan.mode, plan.n_cls)


def build_classify(ctx: BuildContext, info: NodeInfo) -> nn.Module:
    node: ClassifyNode = info.spec
    plan = info.plan_as(ClassifyPlan)
    pre_dim = None if plan.pre_logits is None else plan.pre_logits.dim
    return Classify(plan.in_dim, node.classes, plan.mode, plan.n_cls, pre_dim)


def build_lm_head(ctx: BuildContext, info: NodeInfo) -> nn.Module:
    plan = info.plan_as(LMHeadPlan)
    tied = ctx.built[plan.tie_root] if plan.tie_root is not None else None
    assert tied is None or isinstance(tied, TokenEmbedding)
    return LMHead(plan.in_dim, plan.vocab, tied, scale=plan.scale)


def build_add(ctx: BuildContext, info: NodeInfo) -> nn.Module:
    return Add()


def build_average(ctx: BuildContext, info: NodeInfo) -> nn.Module:
    return Average()


def build_concat(ctx: BuildContext, info: NodeInfo) -> nn.Module:
    node: ConcatNode = info.spec
    return Concat(node.axis)


def build_dropout(ctx: BuildContext, info: NodeInfo) -> nn.Module:
    node: DropoutNode = info.spec
    return nn.Dropout(node.p)


def build_token_prune(ctx: BuildContext, info: NodeInfo) -> nn.Module:
    assert info.prune is not None
    return prune_stage(info.prune, info.id)


def _dim(shape: Any) -> int:
    assert isinstance(shape, SeqShape | VecShape)
    return shape.dim


# --------------------------------------------------------------------------------------- stacks


def build_stack(ctx: BuildContext, info: NodeInfo) -> nn.Module:
    """An ``encoder`` or ``decoder``: its layers, its relative position table, its stages."""
    plan = info.stack
    assert plan is not None
    # the longest input the stack sees: in training a dynamic stage upstream keeps every token
    source = ctx.graph.shape(info.inputs[0])
    assert isinstance(source, SeqShape)
    max_len = source.max_length
    layers = [build_layer(ctx, plan, layer, max_len) for layer in plan.layers]
    relative = None
    uses = None
    if plan.relative_bias is not None:
        assert plan.relative_bias_heads is not None
        rb = plan.relative_bias
        relative = RelativePositionBias(
            plan.relative_bias_heads, rb.buckets, rb.max_distance, bidirectional=not plan.causal
        )
        uses = [isinstance(layer.attention.position, RelativeBias) for layer in plan.layers]
    stages = {
        layer.index: prune_stage(layer.prune, f"{info.id}.prune.{layer.index}")
        for layer in plan.layers
        if layer.prune is not None
    }
    return Stack(layers, relative_bias=relative, relative_bias_layers=uses, stages=stages)


def build_layer(ctx: BuildContext, plan: StackPlan, layer: LayerPlan, max_len: int) -> Block:
    """One layer of a stack; ``max_len`` bounds the queries its attentions see."""
    block = layer.block
    D = plan.dim
    attention = build_attention(ctx, layer.attention, max_len)
    cross = norm_cross = None
    if layer.cross_attention is not None:
        assert plan.memory_shape is not None
        memory_len = plan.memory_shape.max_length
        cross = build_attention(ctx, layer.cross_attention, max(max_len, memory_len))
        norm_cross = make_norm(block.norm.kind, D, block.norm.eps)
    mlp = Mlp(D, layer.hidden, block.mlp.activation, bias=block.mlp.bias, dropout=block.mlp.dropout)
    return Block(
        attention,
        mlp,
        make_norm(block.norm.kind, D, block.norm.eps),
        make_norm(block.norm.kind, D, block.norm.eps),
        cross_attention=cross,
        norm_cross=norm_cross,
        placement=block.norm.placement,
        dropout=block.dropout,
        drop_path=layer.drop_path,
        layer_scale=block.layer_scale,
        dim=D,
    )


def build_attention(ctx: BuildContext, plan: AttentionPlan, max_len: int) -> nn.Module:
    """A softmax ``Attention`` with the kernel chosen for it, or a ``LinearAttention``."""
    mask = mask_pattern(plan.mask)
    shared: dict[str, Any] = {
        "kv_heads": plan.kv_heads,
        "head_dim": plan.head_dim,
        "kv_dim": plan.kv_dim,
        "bias": plan.bias,
        "qk_norm": plan.norm_kind if plan.qk_norm else None,
        "eps": plan.norm_eps,
        "dropout": plan.dropout,
    }
    if plan.kind == "linear":
        return LinearAttention(
            plan.dim, plan.heads, feature_map=plan.feature_map, causal=mask.causal, **shared
        )
    position = plan.position.kind if plan.position is not None else None
    kernel = choose_kernel(
        kind=plan.kind,
        mask=mask,
        position=position,
        device=ctx.device,
        dtype=ctx.dtype,
        has_dropout=plan.dropout > 0,
        override=kernel_override(ctx, mask, position, plan.dropout > 0),
    )
    return Attention(
        plan.dim,
        plan.heads,
        scale=plan.scale,
        mask=mask,
        position=POSITION_PARTS[position](plan, max_len),
        max_len=max_len,
        kernel=kernel,
        **shared,
    )


def rotary_part(plan: AttentionPlan, max_len: int) -> AttentionPosition:
    assert isinstance(plan.position, Rotary)
    return RotaryPosition(
        RotaryEmbedding(
            plan.head_dim, max_len, base=plan.position.base, fraction=plan.position.fraction
        )
    )


#: the attention's position part for each ``position`` kind of the spec (None: no position)
POSITION_PARTS: dict[str | None, Callable[[AttentionPlan, int], AttentionPosition]] = {
    None: lambda plan, max_len: NoPosition(),
    "rotary": rotary_part,
    "alibi": lambda plan, max_len: AlibiPosition(plan.heads),
    "relative_bias": lambda plan, max_len: RelativeBiasPosition(),
}


def kernel_override(
    ctx: BuildContext, mask: MaskPattern, position: str | None, dropout: bool
) -> str | None:
    """The forced kernel where it can run this attention, else None (the automatic choice)."""
    wanted = ctx.kernel_override
    if wanted is None:
        return None
    if wanted not in KERNELS:
        raise CompileError(
            f"unknown attention kernel {wanted!r}; choose one of {', '.join(KERNELS)}"
        )
    problem = kernel_problem(wanted, mask=mask, position=position, has_dropout=dropout)  # type: ignore[arg-type]
    return None if problem is not None else wanted


def prune_stage(stage: PruneStage, name: str) -> TokenStage:
    """The module of one analysed pruning stage; ``name`` labels its records in a trace."""
    return STAGES[stage.method].from_plan(stage, name)


def mask_pattern(mask: Mask) -> MaskPattern:
    """The spec's resolved mask as the attention layer's ``MaskPattern``."""
    if isinstance(mask, SlidingWindowMask):
        return MaskPattern("sliding_window", causal=bool(mask.causal), window=mask.window)
    if isinstance(mask, BlockLocalMask):
        return MaskPattern("block_local", causal=bool(mask.causal), block=mask.block)
    if isinstance(mask, PrefixMask):
        return MaskPattern("prefix", prefix_len=mask.prefix_len)
    return MaskPattern(mask.kind)


BUILD: dict[str, BuildFn] = {
    "embed": build_embed,
    "patch_embed": build_patch_embed,
    "cls_token": build_cls_token,
    "position": build_position,
    "encoder": build_stack,
    "decoder": build_stack,
    "token_prune": build_token_prune,
    "norm": build_norm,
    "pool": build_pool,
    "classify": build_classify,
    "lm_head": build_lm_head,
    "add": build_add,
    "average": build_average,
    "concat": build_concat,
    "dropout": build_dropout,
}

__all__ = [
    "BUILD",
    "BuildContext",
    "BuildFn",
    "build_attention",
    "build_layer",
    "build_node",
    "mask_pattern",
    "prune_stage",
]
