"""One infer function per op, and ``INFER``, the table that finds it by op.

An infer function takes the analysis ``Context``, a node's id and its spec node, whose inputs
are all inferred already; it returns the node's ``NodeInfo`` (output shape and plan), or None
after reporting why the node cannot be built. Stacks and ``token_prune`` live in ``stacks`` and
``pruning``; every other op is here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from archlab.specs.analysis.context import Context
from archlab.specs.analysis.plans import (
    ClassifyPlan,
    EmbedPlan,
    LMHeadPlan,
    NodeInfo,
    PoolPlan,
    PositionPlan,
)
from archlab.specs.analysis.pruning import infer_token_prune, loses_policy, methods_upstream
from archlab.specs.analysis.shapes import ImageShape, SeqShape, TokensShape, VecShape, same_size
from archlab.specs.analysis.stacks import infer_stack
from archlab.specs.models import (
    AddNode,
    AverageNode,
    ClassifyNode,
    ClsTokenNode,
    ConcatNode,
    DropoutNode,
    EmbedNode,
    LMHeadNode,
    NormNode,
    PatchEmbedNode,
    PoolMode,
    PoolNode,
    PositionNode,
    PreLogits,
)

#: ``infer(ctx, node_id, node)``: the node's info, or None (reported) when it cannot be built.
InferFn = Callable[[Context, str, Any], NodeInfo | None]


def infer_embed(ctx: Context, node_id: str, node: EmbedNode) -> NodeInfo | None:
    path = f"nodes.{node_id}"
    src = ctx.infos[node.input]
    if not isinstance(src.shape, TokensShape):
        ctx.errors.add(
            f"{path}.input", f"embed takes a tokens input, but {ctx.describe(node.input)}"
        )
        return None
    vocab = src.shape.vocab
    if node.tie is None:
        if node.dim is None:
            ctx.errors.add(
                f"{path}.dim", "'dim' is required (or 'tie' to share another embed's weight)"
            )
            return None
        shape = SeqShape(src.shape.length, node.dim, dim_from=f"{path}.dim")
        return NodeInfo(node_id, node.op, node, shape, plan=EmbedPlan(node.dim, vocab, node_id))
    tied = tie_target(ctx, node_id, node.tie)
    if tied is None:
        return None
    tied_plan = tied.plan_as(EmbedPlan)
    tied_shape = tied.shape
    assert isinstance(tied_shape, SeqShape)
    if node.dim is not None and node.dim != tied_shape.dim:
        ctx.errors.add(
            f"{path}.dim",
            f"dim {node.dim} differs from the tied embedding {node.tie!r} "
            f"(dim {tied_shape.dim}, from {tied_shape.dim_from}); drop dim or make them equal",
        )
        return None
    if vocab != tied_plan.vocab:
        ctx.errors.add(
            f"{path}.tie",
            f"tied embeddings need equal vocabularies: input {node.input!r} has vocab_size "
            f"{vocab}, embedding {node.tie!r} has {tied_plan.vocab}",
        )
        return None
    shape = SeqShape(src.shape.length, tied_shape.dim, dim_from=tied_shape.dim_from)
    plan = EmbedPlan(tied_shape.dim, vocab, tied_plan.tie_root)
    return NodeInfo(node_id, node.op, node, shape, plan=plan)


def tie_target(ctx: Context, node_id: str, ref: str) -> NodeInfo | None:
    """The embed node ``ref`` that node ``node_id`` ties its weight to (its ``tie``); None,
    reported, when ``ref`` is no embed node (or unknown, reported as such)."""
    path = f"nodes.{node_id}.tie"
    if ref in ctx.spec.inputs:
        ctx.errors.add(path, f"can only tie to an embed node; {ref!r} is an input")
        return None
    target = ctx.spec.nodes.get(ref)
    if target is None:
        return None  # reported as an unknown reference
    if not isinstance(target, EmbedNode):
        ctx.errors.add(path, f"can only tie to an embed node; {ref!r} is a {target.op} node")
        return None
    if ref == node_id:
        ctx.errors.add(path, f"embed {node_id!r} cannot tie to itself")
        return None
    return ctx.infos.get(ref)


def infer_patch_embed(ctx: Context, node_id: str, node: PatchEmbedNode) -> NodeInfo | None:
    path = f"nodes.{node_id}"
    img = ctx.infos[node.input].shape
    if not isinstance(img, ImageShape):
        ctx.errors.add(
            f"{path}.input",
            f"patch_embed takes an image input, but {ctx.describe(node.input)}",
        )
        return None
    ph, pw = node.patch_size
    bad = False
    for side, size, patch in (("height", img.height, ph), ("width", img.width, pw)):
        if size % patch:
            ctx.errors.add(
                f"{path}.patch_size",
                f"patch size {patch} does not divide the image {side} {size} "
                f"(from inputs.{node.input}.size)",
            )
            bad = True
    if bad:
        return None
    grid = (img.height // ph, img.width // pw)
    shape = SeqShape(grid[0] * grid[1], node.dim, grid=grid, dim_from=f"{path}.dim")
    return NodeInfo(node_id, node.op, node, shape)


def infer_cls_token(ctx: Context, node_id: str, node: ClsTokenNode) -> NodeInfo | None:
    seq = ctx.seq(node_id, node.input, "cls_token")
    if seq is None or loses_policy(ctx, f"nodes.{node_id}.input", node.input, "cls_token"):
        return None
    shape = replace(
        seq,
        length=seq.length + node.count,
        n_cls=seq.n_cls + node.count,
        train_length=None if seq.train_length is None else seq.train_length + node.count,
    )
    return NodeInfo(node_id, node.op, node, shape)


def infer_position(ctx: Context, node_id: str, node: PositionNode) -> NodeInfo | None:
    path = f"nodes.{node_id}"
    seq = ctx.seq(node_id, node.input, "position")
    if seq is None:
        return None
    max_len = node.max_len if node.max_len is not None else seq.length
    if max_len < seq.length:
        ctx.errors.add(
            f"{path}.max_len",
            f"max_len {max_len} is shorter than the sequence it encodes ({seq.length} tokens "
            f"from {node.input!r}); raise it or leave it out",
        )
        return None
    if node.encoding == "sincos_2d" and not _sincos_2d_fits(ctx, path, node, seq):
        return None
    if methods_upstream(ctx.infos, node.input):
        ctx.errors.add(
            f"{path}.input",
            f"{node.input!r} passed a token pruning stage, which keeps, reorders and merges "
            "tokens, so their slots are no longer their positions and a position encoding "
            "would add the wrong ones; encode positions before the first pruning stage",
        )
        return None
    return NodeInfo(node_id, node.op, node, seq, plan=PositionPlan(max_len))


def _sincos_2d_fits(ctx: Context, path: str, node: PositionNode, seq: SeqShape) -> bool:
    """Whether a ``sincos_2d`` encoding can encode ``seq`` (reported if not)."""
    if seq.grid is None:
        ctx.errors.add(
            f"{path}.encoding",
            f"sincos_2d needs an image patch grid, but {node.input!r} carries no grid; "
            "use 'learned' or 'sinusoidal'",
        )
        return False
    if seq.dim % 4:
        ctx.errors.add(
            f"{path}.encoding",
            f"sincos_2d needs a width divisible by 4, not {seq.dim} (from {seq.dim_from})",
        )
        return False
    if node.max_len is not None and node.max_len != seq.length:
        ctx.errors.add(f"{path}.max_len", "sincos_2d encodes the grid itself; leave max_len out")
        return False
    return True


def infer_norm(ctx: Context, node_id: str, node: NormNode) -> NodeInfo | None:
    return _per_token(ctx, node_id, node)


def infer_dropout(ctx: Context, node_id: str, node: DropoutNode) -> NodeInfo | None:
    return _per_token(ctx, node_id, node)


def _per_token(ctx: Context, node_id: str, node: NormNode | DropoutNode) -> NodeInfo | None:
    """An op that maps features one token (or vector) at a time: its input's shape."""
    shape = ctx.infos[node.input].shape
    if not isinstance(shape, SeqShape | VecShape):
        ctx.errors.add(
            f"nodes.{node_id}.input", f"{node.op} needs features, but {ctx.describe(node.input)}"
        )
        return None
    return NodeInfo(node_id, node.op, node, shape)


def pool_mode(ctx: Context, path: str, mode: PoolMode | None, seq: SeqShape) -> PoolMode | None:
    """The pooling mode of ``seq``: ``mode``, or by default ``cls`` when the sequence has CLS
    tokens and ``mean`` otherwise; None, reported, for ``cls`` without CLS tokens."""
    if mode is None:
        return "cls" if seq.n_cls else "mean"
    if mode == "cls" and not seq.n_cls:
        ctx.errors.add(
            path, "pool mode 'cls' needs a cls_token upstream, and there is none; use 'mean'"
        )
        return None
    if mode == "distill" and seq.n_cls < 2:
        ctx.errors.add(
            path,
            "pool mode 'distill' reads the second CLS token and needs a cls_token with count 2 "
            f"upstream; this sequence has {seq.n_cls}",
        )
        return None
    return mode


def infer_pool(ctx: Context, node_id: str, node: PoolNode) -> NodeInfo | None:
    seq = ctx.seq(node_id, node.input, "pool")
    if seq is None:
        return None
    mode = pool_mode(ctx, f"nodes.{node_id}.mode", node.mode, seq)
    if mode is None:
        return None
    shape = VecShape(seq.dim, seq.dim_from)
    return NodeInfo(node_id, node.op, node, shape, plan=PoolPlan(mode, seq.n_cls))


def pre_logits(node: ClassifyNode, dim: int) -> PreLogits | None:
    """A classifier's pre-logits layer with its width resolved (the input width D unless
    written)."""
    if node.pre_logits is None or node.pre_logits.dim is not None:
        return node.pre_logits
    return node.pre_logits.model_copy(update={"dim": dim})


def infer_classify(ctx: Context, node_id: str, node: ClassifyNode) -> NodeInfo | None:
    path = f"nodes.{node_id}"
    shape = ctx.infos[node.input].shape
    if isinstance(shape, SeqShape):
        mode = pool_mode(ctx, f"{path}.pool", node.pool, shape)
        if mode is None:
            return None
        plan = ClassifyPlan(shape.dim, mode, shape.n_cls, pre_logits(node, shape.dim))
    elif isinstance(shape, VecShape):
        if node.pool is not None:
            ctx.errors.add(
                f"{path}.pool",
                f"{node.input!r} is already pooled (B, {shape.dim}); leave pool out",
            )
            return None
        plan = ClassifyPlan(shape.dim, None, 0, pre_logits(node, shape.dim))
    else:
        ctx.errors.add(f"{path}.input", f"classify needs features, but {ctx.describe(node.input)}")
        return None
    out = VecShape(node.classes, f"{path}.classes")
    return NodeInfo(node_id, node.op, node, out, plan=plan)


def infer_lm_head(ctx: Context, node_id: str, node: LMHeadNode) -> NodeInfo | None:
    path = f"nodes.{node_id}"
    seq = ctx.seq(node_id, node.input, "lm_head")
    if seq is None:
        return None
    if node.tie is not None:
        tied = _tied_head(ctx, node_id, node, seq)
        if tied is None:
            return None
        vocab, root = tied.vocab, tied.tie_root
    elif node.vocab_size is None:
        ctx.errors.add(
            f"{path}.vocab_size",
            "'vocab_size' is required when the head is not tied to an embed",
        )
        return None
    else:
        vocab, root = node.vocab_size, None
    shape = SeqShape(seq.length, vocab, seq.n_cls, seq.grid, f"{path}.vocab_size", seq.train_length)
    return NodeInfo(
        node_id, node.op, node, shape, plan=LMHeadPlan(vocab, root, seq.dim, node.scale)
    )


def _tied_head(ctx: Context, node_id: str, node: LMHeadNode, seq: SeqShape) -> EmbedPlan | None:
    """The plan of the embedding a tied ``lm_head`` reading ``seq`` shares its weight with;
    None, reported, when the two do not fit."""
    assert node.tie is not None
    path = f"nodes.{node_id}"
    tied = tie_target(ctx, node_id, node.tie)
    if tied is None:
        return None
    tied_plan = tied.plan_as(EmbedPlan)
    tied_shape = tied.shape
    assert isinstance(tied_shape, SeqShape)
    if tied_shape.dim != seq.dim:
        ctx.errors.add(
            f"{path}.tie",
            f"lm_head input width {seq.dim} (from {seq.dim_from}) differs from the tied "
            f"embedding {node.tie!r} (dim {tied_shape.dim}); tying needs equal widths",
        )
        return None
    if node.vocab_size is not None and node.vocab_size != tied_plan.vocab:
        ctx.errors.add(
            f"{path}.vocab_size",
            f"vocab_size {node.vocab_size} differs from the tied embedding {node.tie!r}'s "
            f"vocabulary {tied_plan.vocab}; leave it out",
        )
        return None
    return tied_plan


def infer_add(ctx: Context, node_id: str, node: AddNode | AverageNode) -> NodeInfo | None:
    """``add`` and ``average``: inputs of one shape, which the output keeps."""
    path = f"nodes.{node_id}.inputs"
    if any(loses_policy(ctx, path, ref, node.op) for ref in node.inputs):
        return None
    shapes = [ctx.infos[ref].shape for ref in node.inputs]
    first = shapes[0]
    if not isinstance(first, SeqShape | VecShape):
        ctx.errors.add(path, f"{node.op} needs features, but {ctx.describe(node.inputs[0])}")
        return None
    for ref, shape in zip(node.inputs[1:], shapes[1:], strict=True):
        if not same_size(shape, first):
            ctx.errors.add(
                path,
                f"{node.op} needs equal shapes: {node.inputs[0]!r} is {first}, {ref!r} is {shape}",
            )
            return None
    return NodeInfo(node_id, node.op, node, first)


def infer_concat(ctx: Context, node_id: str, node: ConcatNode) -> NodeInfo | None:
    path = f"nodes.{node_id}.inputs"
    seqs = []
    for ref in node.inputs:
        seq = ctx.seq(node_id, ref, "concat", "inputs")
        if seq is None or loses_policy(ctx, path, ref, "concat"):
            return None
        seqs.append(seq)
    first, refs = seqs[0], node.inputs
    along_sequence = node.axis == "sequence"
    # the first input that does not fit the first one: its width (sequence) or length (features)
    for ref, seq in zip(refs[1:], seqs[1:], strict=True):
        if along_sequence and seq.dim != first.dim:
            problem = (
                f"concat along the sequence needs equal widths: {refs[0]!r} has "
                f"{first.dim} (from {first.dim_from}), {ref!r} has {seq.dim} (from {seq.dim_from})"
            )
        elif not along_sequence and seq.length != first.length:
            problem = (
                f"concat along features needs equal lengths: {refs[0]!r} has "
                f"{first.length} tokens, {ref!r} has {seq.length}"
            )
        else:
            continue
        ctx.errors.add(path, problem)
        return None
    if along_sequence:
        length = sum(s.length for s in seqs)
        shape = SeqShape(length, first.dim, first.n_cls, None, first.dim_from)
    else:
        shape = replace(first, dim=sum(s.dim for s in seqs), dim_from=f"nodes.{node_id}")
    return NodeInfo(node_id, node.op, node, shape)


#: The infer function of every op of the ``Node`` union (a test checks it covers them all).
INFER: dict[str, InferFn] = {
    "embed": infer_embed,
    "patch_embed": infer_patch_embed,
    "cls_token": infer_cls_token,
    "position": infer_position,
    "encoder": infer_stack,
    "decoder": infer_stack,
    "token_prune": infer_token_prune,
    "norm": infer_norm,
    "pool": infer_pool,
    "classify": infer_classify,
    "lm_head": infer_lm_head,
    "add": infer_add,
    "average": infer_add,
    "concat": infer_concat,
    "dropout": infer_dropout,
}
