"""Encoder and decoder stacks: every layer's merged block, resolved attention and
cross-attention, hidden width, drop-path rate and pruning stage, checked layer by layer.

A problem in a layer is reported where it was written: at the last override of the layer that
sets the field (``nodes.enc.overrides.1.attention.heads``), else at the stack's ``block``, and
once however many layers share it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from archlab.specs.analysis.context import Context
from archlab.specs.analysis.plans import AttentionPlan, LayerPlan, NodeInfo, PruneStage, StackPlan
from archlab.specs.analysis.pruning import (
    any_dynamic,
    check_prune_attention,
    loses_policy,
    prune_schedule,
    pruned_shape,
    pruned_upstream,
    tokens_after,
)
from archlab.specs.analysis.shapes import SeqShape
from archlab.specs.models import (
    Attention,
    Block,
    BlockLocalMask,
    CausalMask,
    CrossAttention,
    DecoderNode,
    Mask,
    NoMask,
    RelativeBias,
    Rotary,
    SlidingWindowMask,
    StackNode,
)
from archlab.specs.overrides import layer_block

#: ``report(rel, message)``: a problem with the attention setting ``rel`` of the layer at hand.
Report = Callable[[str, str], None]


def infer_stack(ctx: Context, node_id: str, node: StackNode) -> NodeInfo | None:
    """The ``encoder`` and ``decoder`` ops: the stack's plan, and the sequence it outputs."""
    path = f"nodes.{node_id}"
    seq = ctx.seq(node_id, node.input, node.op)
    if seq is None:
        return None
    memory_shape = None
    if isinstance(node, DecoderNode) and node.memory is not None:
        memory_shape = ctx.seq(node_id, node.memory, "decoder memory", "memory")
        if memory_shape is None or loses_policy(
            ctx, f"{path}.memory", node.memory, "a decoder's memory"
        ):
            return None
    blocks = _blocks(ctx, path, node)
    if blocks is None:
        return None
    stages = prune_schedule(ctx, node_id, node, seq)
    schedule = stages or {}  # a wrong schedule is reported; check the layers all the same
    pruned_from = _pruned_from(ctx, node, schedule)
    layers = _Layers(ctx, path, node, seq, memory_shape, schedule, pruned_from, stages is not None)
    plans = [layers.layer(i, block, owners) for i, (block, owners) in enumerate(blocks)]
    if not layers.ok:
        return None
    plan = StackPlan(
        node_id,
        node.op,
        seq.dim,
        isinstance(node, DecoderNode),
        tuple(p for p in plans if p is not None),
        node.memory if isinstance(node, DecoderNode) else None,
        memory_shape,
        layers.rel_bias,
        layers.rel_heads,
    )
    shape = pruned_shape(seq, layers.tokens, any_dynamic(plan.stages))
    return NodeInfo(node_id, node.op, node, shape, plan=plan)


def _blocks(ctx: Context, path: str, node: StackNode) -> list[tuple[Block, tuple[int, ...]]] | None:
    """Each layer's block with the indices of the overrides merged into it; None, reported,
    when a layer's overrides merge into an invalid block."""
    blocks = []
    for i, owners in enumerate(node.layer_overrides):
        try:
            blocks.append((layer_block(node, i), owners))
        except ValueError as exc:
            ctx.errors.add(
                f"{path}.overrides.{owners[-1]}",
                f"layer {i}: the overrides {list(owners)} merge into an invalid block: {exc}",
            )
            return None
    return blocks


def _pruned_from(ctx: Context, node: StackNode, stages: dict[int, PruneStage]) -> int | None:
    """The first layer that sees pruned (reordered) tokens: from the first stage on, or 0 when
    the stack's input was pruned upstream; None if no layer does."""
    upstream = pruned_upstream(ctx.infos, node.input)
    if not stages:
        return 0 if upstream else None
    first = min(stages)
    start = first if stages[first].placement == "before" else first + 1
    return min(start, 0) if upstream else start


class _Reporter:
    """Reports a layer's problem once, where it was written."""

    def __init__(self, ctx: Context, path: str, node: StackNode) -> None:
        self.ctx, self.path, self.node = ctx, path, node
        self.reported: set[tuple[str, str]] = set()

    def __call__(self, owners: tuple[int, ...], rel: str, message: str, exact: bool = True) -> None:
        """Report at the last override of the layer that sets ``rel`` (with ``exact=False``:
        the layer's last override, whatever it sets), else at the stack's block."""
        k = last_setting(self.node, owners, rel) if exact else (owners[-1] if owners else None)
        where = f"{self.path}.block.{rel}" if k is None else f"{self.path}.overrides.{k}.{rel}"
        if (where, message) not in self.reported:
            self.reported.add((where, message))
            self.ctx.errors.add(where, message)


@dataclass
class _Layers:
    """The layers of one stack, planned in order: what each leaves for the next (the tokens,
    the relative-bias table they share) and whether all were fine."""

    ctx: Context
    path: str
    node: StackNode
    seq: SeqShape
    memory: SeqShape | None  # a decoder's memory
    stages: dict[int, PruneStage]
    pruned_from: int | None  # the first layer that sees pruned tokens
    ok: bool = True
    tokens: int = field(init=False)  # entering the next layer
    rel_bias: RelativeBias | None = None
    rel_heads: int | None = None
    report: _Reporter = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.seq.length
        self.report = _Reporter(self.ctx, self.path, self.node)

    def layer(self, i: int, block: Block, owners: tuple[int, ...]) -> LayerPlan | None:
        """Layer ``i``'s plan; None when its attention is wrong (``ok`` then turns False)."""
        attn, cross = self._attentions(block, owners)
        if attn is None:
            self.ok = False
            return None
        self._check_relative_bias(i, attn, owners)
        if self.pruned_from is not None and (i >= self.pruned_from or i in self.stages):
            problem = pruned_attention_problem(attn, i >= self.pruned_from)
            if problem is not None:
                self.report(owners, "attention", f"layer {i} {problem}", exact=False)
                self.ok = False
        seq = self.seq
        hidden = (
            block.mlp.hidden if block.mlp.hidden is not None else int(block.mlp.ratio * seq.dim)
        )
        if hidden < 1:
            message = f"ratio {block.mlp.ratio} of width {seq.dim} leaves no hidden units"
            self.report(owners, "mlp.ratio", message)
            self.ok = False
        tokens_in, stage = self._stage(i, attn)
        depth = self.node.depth
        drop_path = block.drop_path * i / (depth - 1) if depth > 1 else block.drop_path
        last = owners[-1] if owners else None
        return LayerPlan(
            i, block, attn, cross, hidden, drop_path, tokens_in, self.tokens, stage, last
        )

    def _attentions(
        self, block: Block, owners: tuple[int, ...]
    ) -> tuple[AttentionPlan | None, AttentionPlan | None]:
        """A layer's attention and cross-attention plans (None where wrong, reported)."""
        attn = attention(
            block.attention,
            self.seq,
            isinstance(self.node, DecoderNode),
            block,
            lambda rel, msg: self.report(owners, f"attention.{rel}", msg),
        )
        cross = None
        if self.memory is not None:
            cross = cross_attention(
                block,
                self.memory,
                self.seq,
                lambda rel, msg: self.report(owners, f"cross_attention.{rel}", msg),
            )
            if cross is None:
                self.ok = False
        elif block.cross_attention is not None:
            message = "cross_attention is set, but the decoder has no 'memory' to attend to"
            self.report(owners, "cross_attention", message)
            self.ok = False
        return attn, cross

    def _check_relative_bias(self, i: int, attn: AttentionPlan, owners: tuple[int, ...]) -> None:
        """Layers with relative_bias positions share one table: equal settings and heads."""
        if not isinstance(attn.position, RelativeBias):
            return
        if self.rel_bias is None:
            self.rel_bias, self.rel_heads = attn.position, attn.heads
        elif attn.position != self.rel_bias or attn.heads != self.rel_heads:
            self.report(
                owners,
                "attention.position",
                f"layers sharing the stack's relative_bias table need equal settings and head "
                f"counts: layer {i} has {attn.heads} heads and {attn.position.model_dump(exclude={'kind'})}, "
                f"an earlier layer {self.rel_heads} heads and {self.rel_bias.model_dump(exclude={'kind'})}",
                exact=False,
            )
            self.ok = False

    def _stage(self, i: int, attn: AttentionPlan) -> tuple[int, PruneStage | None]:
        """The tokens entering layer ``i`` and its pruning stage, counted from the tokens the
        layers before it left (``tokens`` moves on to what the layer's MLP sees)."""
        stage = self.stages.get(i)
        tokens_in = tokens = self.tokens
        if stage is None:
            return tokens_in, None
        if stage.method in ("attention_topk", "merge") and not check_prune_attention(
            self.ctx, f"{self.path}.prune", stage.method, attn
        ):
            self.ok = False
        after = tokens_after(stage, tokens)
        if stage.placement == "before":
            stage = replace(stage, tokens_before=tokens, tokens_after=after)
            tokens_in = after
        else:
            stage = replace(stage, tokens_before=tokens, tokens_after=after, head_dim=attn.head_dim)
        self.tokens = after
        return tokens_in, stage


# --------------------------------------------------------------------------------- attention


def attention(
    attn: Attention, seq: SeqShape, causal: bool, block: Block, report: Report
) -> AttentionPlan | None:
    """The plan of an attention over ``seq`` in ``block``; None, reported, when wrong."""
    dim = seq.dim
    ok = True
    if attn.head_dim is None and dim % attn.heads:
        report(
            "heads",
            f"{attn.heads} heads do not divide dim {dim} (dim comes from {seq.dim_from}); set head_dim or change heads",
        )
        ok = False
    kv_heads = attn.kv_heads if attn.kv_heads is not None else attn.heads
    if attn.heads % kv_heads:
        report("kv_heads", f"kv_heads {kv_heads} does not divide heads {attn.heads}")
        ok = False
    head_dim = attn.head_dim if attn.head_dim is not None else dim // attn.heads
    mask = resolve_mask(attn.mask, causal)
    if attn.kind == "softmax" and attn.feature_map != "elu":  # elu: the default, harmless
        report(
            "feature_map",
            f"feature_map {attn.feature_map!r} belongs to linear attention; this attention is softmax, remove it",
        )
        ok = False
    if attn.kind == "linear" and not _linear_fits(attn, mask, report):
        ok = False
    if attn.kind == "linear" and attn.scale is not None:
        report("scale", "linear attention has no score scale; remove 'scale'")
        ok = False
    if isinstance(attn.position, Rotary):
        rotated = round(attn.position.fraction * head_dim)
        if rotated % 2 or rotated == 0:
            report(
                "position",
                f"rotary needs an even number of dimensions, but fraction {attn.position.fraction} of head_dim {head_dim} is {rotated}",
            )
            ok = False
    if not ok:
        return None
    return AttentionPlan(
        attn.kind,
        attn.heads,
        kv_heads,
        head_dim,
        dim,
        None,
        mask,
        attn.position,
        attn.dropout,
        attn.bias,
        attn.qk_norm,
        attn.feature_map,
        block.norm.kind,
        block.norm.eps,
        attn.scale,
    )


def _linear_fits(attn: Attention, mask: Mask, report: Report) -> bool:
    """Whether linear attention can take ``mask`` and the attention's position (reported)."""
    ok = True
    if not isinstance(mask, NoMask | CausalMask):
        report(
            "mask",
            f"linear attention supports the masks none and causal (plus padding); no kernel computes {mask.kind} with it",
        )
        ok = False
    if attn.position is not None:
        report(
            "position",
            f"linear attention takes no in-attention position ({attn.position.kind}); add a 'position' node before the stack instead",
        )
        ok = False
    return ok


#: The cross-attention settings that default to the layer's self-attention.
_INHERITED = (
    "kind",
    "heads",
    "kv_heads",
    "head_dim",
    "dropout",
    "bias",
    "qk_norm",
    "feature_map",
    "scale",
)


def cross_attention(
    block: Block, memory: SeqShape, seq: SeqShape, report: Report
) -> AttentionPlan | None:
    """The plan of a layer's cross-attention from ``seq`` to ``memory`` (its settings default
    to the layer's attention); None, reported, when wrong."""
    base = block.attention
    given = block.cross_attention or CrossAttention()
    fields: dict[str, Any] = {
        name: getattr(given, name) if getattr(given, name) is not None else getattr(base, name)
        for name in _INHERITED
    }
    if given.heads is not None and given.kv_heads is None:
        fields["kv_heads"] = None  # a new head count: kv_heads default follows it
    ok = True
    if given.mask is not None and not isinstance(given.mask, NoMask):
        report(
            "mask",
            f"cross-attention sees the whole memory (plus its padding); mask {given.mask.kind} is not supported",
        )
        ok = False
    if given.position is not None:
        report(
            "position", f"cross-attention takes no in-attention position ({given.position.kind})"
        )
        ok = False
    if fields["kind"] == "linear":
        report("kind", "linear cross-attention is not supported; use softmax")
        ok = False
    if fields["kind"] != "linear":
        del fields["feature_map"]  # inherited, not written: softmax takes none
    attn = Attention.model_validate({**fields, "mask": "none", "position": None})
    plan = attention(attn, seq, False, block, report)
    if plan is None or not ok:
        return None
    return replace(plan, kv_dim=memory.dim)


def resolve_mask(mask: Mask | None, causal: bool) -> Mask:
    """Null -> the stack's own mask; ``causal: null`` inside a mask -> the stack's causality."""
    if mask is None:
        return CausalMask(kind="causal") if causal else NoMask(kind="none")
    if isinstance(mask, SlidingWindowMask | BlockLocalMask) and mask.causal is None:
        return mask.model_copy(update={"causal": causal})
    return mask


def last_setting(node: StackNode, owners: tuple[int, ...], rel: str) -> int | None:
    """The last of a layer's overrides that sets the dotted block field ``rel``, if any."""
    for k in reversed(owners):
        value: Any = node.overrides[k].partial
        for part in rel.split("."):
            value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
        if value is not _MISSING:
            return k
    return None


_MISSING = object()


def pruned_attention_problem(attn: AttentionPlan, after: bool) -> str | None:
    """Why a layer that sees pruned tokens (``after``) or hosts a stage cannot, else None.

    Pruning keeps, reorders and merges tokens, so the positions of the survivors are no longer
    their slots: attention that depends on slots (rotary, ALiBi, relative tables, structural
    masks) would silently compute something else. DynamicViT's training policy, ToMe's
    proportional attention and EViT's CLS scores need softmax attention.
    """
    if attn.kind != "softmax":
        return f"sees pruned tokens, which needs softmax attention (it uses {attn.kind})"
    if not after:
        return None
    if attn.position is not None:
        return (
            f"sees pruned tokens, whose slots are no longer their positions, so it cannot use "
            f"{attn.position.kind} positions; encode positions before the first pruning stage "
            "(a 'position' node) or prune later"
        )
    if attn.mask.kind != "none":
        return (
            f"sees pruned tokens, whose slots are no longer their positions, so it cannot use a "
            f"{attn.mask.kind} mask; prune only bidirectional, unmasked stacks"
        )
    return None
