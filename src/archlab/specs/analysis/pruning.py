"""Token pruning in the analysis: keep counts, stages, the schedule of a stack's ``prune``, the
``token_prune`` node, and what pruning upstream forbids downstream.

A stage's counts are fixed here, before any weight exists: ``kept_tokens`` is the one rounding
rule, used by the stages at run time too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from archlab.specs.analysis.context import Context
from archlab.specs.analysis.plans import (
    AttentionPlan,
    NodeInfo,
    PruneStage,
    StackPlan,
    upstream_through,
)
from archlab.specs.analysis.shapes import SeqShape
from archlab.specs.models import EncoderNode, PruneSettings, StackNode, TokenPruneNode

if TYPE_CHECKING:
    from archlab.specs.analysis.graph import Graph


def kept_tokens(keep: float, patches: int) -> int:
    """k = ceil(keep * patches), at least 1 (rounded first, so 0.7 * 10 keeps 7, not 8)."""
    return max(1, math.ceil(round(keep * patches, 9)))


def prune_methods(info: NodeInfo) -> set[str]:
    """The pruning methods node ``info`` runs: a ``token_prune`` node's, or a stack's stages'."""
    if info.prune is not None:  # a token_prune node
        return {info.prune.method}
    if info.stack is not None:
        return {stage.method for stage in info.stack.stages}
    return set()


def graph_prune_methods(graph: Graph) -> set[str]:
    """The pruning methods anywhere in ``graph`` (empty for a spec that does not prune)."""
    return {method for info in graph.nodes.values() for method in prune_methods(info)}


def has_pruning(graph: Graph) -> bool:
    """Whether the spec has token pruning stages (its compiled ``forward`` then takes
    ``__trace``)."""
    return bool(graph_prune_methods(graph))


# ------------------------------------------------------------------------------------ stages


def make_stage(
    settings: PruneSettings, layer: int | None, placement: str, seq: SeqShape, head_dim: int | None
) -> PruneStage:
    """The stage ``settings`` describe, pruning the sequence ``seq``."""
    stage = PruneStage(
        settings.method,
        settings.keep,
        settings.r,
        settings.fuse,
        layer,
        placement,
        seq.n_cls,
        seq.length,
        seq.length,
        seq.dim,
        head_dim,
    )
    return replace(stage, tokens_after=tokens_after(stage, seq.length))


def tokens_after(stage: PruneStage, tokens: int) -> int:
    """The tokens ``stage`` leaves of ``tokens`` (CLS tokens included)."""
    patches = tokens - stage.n_cls
    if stage.method == "merge":
        assert stage.r is not None
        return tokens - min(stage.r, patches // 2)
    assert stage.keep is not None
    kept = kept_tokens(stage.keep, patches)
    if stage.fuse and kept < patches:
        kept += 1
    return stage.n_cls + kept


def any_dynamic(stages: list[PruneStage]) -> bool:
    return any(stage.method == "dynamic" for stage in stages)


def pruned_shape(seq: SeqShape, tokens: int, dynamic: bool, *, stage: bool = False) -> SeqShape:
    """``seq`` once pruning left ``tokens`` of it at inference (``dynamic``: by stages of which
    one is DynamicViT's). The patch grid stays where no token went, except right after a
    ``stage``, whose output never has one."""
    return replace(
        seq,
        length=tokens,
        grid=seq.grid if tokens == seq.length and not stage else None,
        train_length=train_length(seq, tokens, dynamic),
    )


def train_length(seq: SeqShape, length: int, dynamic: bool) -> int | None:
    """``train_length`` of ``seq`` after pruning leaves ``length`` tokens at inference; with
    ``dynamic`` one of the stages is DynamicViT's, which keeps every token in training."""
    train = seq.max_length if dynamic else seq.train_length
    return None if train == length else train


# ------------------------------------------------------------------------------ upstream


def methods_upstream(infos: Mapping[str, NodeInfo], ref: str) -> set[str]:
    """The pruning methods the sequence ``ref`` went through (norm, dropout pass it on)."""
    methods: set[str] = set()
    info = upstream_through(infos, ref)
    while info is not None and (info.op == "token_prune" or info.stack is not None):
        methods.update(prune_methods(info))
        info = upstream_through(infos, info.inputs[0]) if info.inputs else None
    return methods


def pruned_upstream(infos: Mapping[str, NodeInfo], ref: str) -> bool:
    """Whether the sequence ``ref`` passed a pruning stage (through norm and dropout nodes)."""
    info = upstream_through(infos, ref)
    return info is not None and bool(prune_methods(info))


def upstream_stack(infos: Mapping[str, NodeInfo], ref: str) -> StackPlan | None:
    """The stack whose output reaches ``ref`` through norm and dropout nodes, if any."""
    info = upstream_through(infos, ref)
    return info.stack if info is not None else None


def loses_policy(ctx: Context, path: str, ref: str, what: str) -> bool:
    """Report (and return True) when ``ref`` passed a dynamic stage, whose training policy
    ``what`` would not carry: only norm, dropout, stacks and token_prune nodes pass it on."""
    if "dynamic" not in methods_upstream(ctx.infos, ref):
        return False
    ctx.errors.add(
        path,
        f"{ref!r} passed a dynamic pruning stage, and {what} cannot take such a sequence: in "
        "training DynamicViT keeps every token and marks the dropped ones in a policy that "
        "only norm, dropout, encoder/decoder and token_prune nodes carry, so the dropped "
        "tokens would count again; combine sequences before the dynamic stage, or pool first",
    )
    return True


def check_prune_attention(ctx: Context, path: str, method: str, attn: AttentionPlan) -> bool:
    """Whether the attention a stage of ``method`` reads can serve it (reported if not)."""
    if attn.kind != "softmax":
        ctx.errors.add(
            f"{path}.method",
            f"{method} needs softmax attention; the layer uses {attn.kind} attention",
        )
        return False
    return True


def after_dynamic(method: str) -> str:
    return (
        f"{method} cannot follow a dynamic stage: in training DynamicViT keeps every token and "
        f"only masks the dropped ones, which {method} would score, fuse or merge as if alive; "
        "use dynamic for the later stages too, or put this stage before the dynamic one"
    )


def needs_cls(method: str) -> str:
    return f"{method} scores tokens by the CLS token's attention, but no cls_token is upstream; add one or use 'dynamic'"


# ----------------------------------------------------------------------- schedule and node


def prune_schedule(
    ctx: Context, node_id: str, node: StackNode, seq: SeqShape
) -> dict[int, PruneStage] | None:
    """The stages of a stack's ``prune`` by layer, counted as if each pruned ``seq`` (the stack
    counts them layer by layer); None, reported, when the schedule is wrong."""
    prune = node.prune if isinstance(node, EncoderNode) else None
    if prune is None:
        return {}
    path = f"nodes.{node_id}.prune"
    ok = True
    outside = [i for i in prune.at if i >= node.depth]
    if outside:
        ctx.errors.add(
            f"{path}.at",
            f"{', '.join(map(str, outside))} outside the stack (depth {node.depth}: layers 0-{node.depth - 1})",
        )
        ok = False
    if list(prune.at) != sorted(set(prune.at)):
        ctx.errors.add(
            f"{path}.at", f"layer indices must be unique and ascending, not {list(prune.at)}"
        )
        ok = False
    if prune.method == "attention_topk" and seq.n_cls == 0:
        ctx.errors.add(f"{path}.method", needs_cls(prune.method))
        ok = False
    if prune.method != "dynamic" and "dynamic" in methods_upstream(ctx.infos, node.input):
        ctx.errors.add(f"{path}.method", after_dynamic(prune.method))
        ok = False
    if not ok:
        return None
    placement = "before" if prune.method == "dynamic" else "inside"
    return {i: make_stage(prune, i, placement, seq, None) for i in prune.at}


def infer_token_prune(ctx: Context, node_id: str, node: TokenPruneNode) -> NodeInfo | None:
    path = f"nodes.{node_id}"
    seq = ctx.seq(node_id, node.input, "token_prune")
    if seq is None:
        return None
    head_dim = None
    if node.method in ("attention_topk", "merge"):
        head_dim = _read_attention(ctx, path, node, seq)
        if head_dim is None:
            return None
    if node.method != "dynamic" and "dynamic" in methods_upstream(ctx.infos, node.input):
        ctx.errors.add(f"{path}.method", after_dynamic(node.method))
        return None
    stage = make_stage(node, None, "between", seq, head_dim)
    dynamic = node.method == "dynamic"
    shape = pruned_shape(seq, stage.tokens_after, dynamic, stage=True)
    return NodeInfo(node_id, node.op, node, shape, plan=stage)


def _read_attention(ctx: Context, path: str, node: TokenPruneNode, seq: SeqShape) -> int | None:
    """The head width of the attention a ``token_prune`` node of an attention-reading method
    scores by (the last layer of the stack before it); None, reported, if it cannot."""
    upstream = upstream_stack(ctx.infos, node.input)
    if upstream is None:
        ctx.errors.add(
            f"{path}.method",
            f"{node.method} reads the attention of the layer before it, but {node.input!r} is "
            "not an encoder/decoder (nor a norm or dropout after one)",
        )
        return None
    last = upstream.layers[-1].attention
    if not check_prune_attention(ctx, path, node.method, last):
        return None
    if upstream.layers[-1].prune is not None:
        ctx.errors.add(
            f"{path}.method",
            f"{node.method} reads the attention of {upstream.id!r}'s last layer, which "
            "prunes tokens itself after that attention; let the stack's 'prune' cover "
            "this stage too, or put a layer between them",
        )
        return None
    if node.method == "attention_topk" and seq.n_cls == 0:
        ctx.errors.add(f"{path}.method", needs_cls(node.method))
        return None
    return last.head_dim
