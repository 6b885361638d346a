"""What the analysis resolved for each node: one frozen plan per op, and ``NodeInfo``.

A plan holds the settings a node's op takes from the graph rather than from its own fields
(an embedding's width from the embedding it is tied to, a position table's length from the
sequence, a pooling mode from the CLS tokens upstream, a stack's merged blocks layer by layer).
Ops with nothing to resolve (``patch_embed``, ``cls_token``, ``norm``, ``add``, ``concat``,
``dropout``, the inputs) have no plan (``None``); their spec node says everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from archlab.specs.analysis.shapes import SeqShape, Shape
from archlab.specs.models import (
    Block,
    Mask,
    NormKind,
    PoolMode,
    Position,
    PreLogits,
    RelativeBias,
)

# ----------------------------------------------------------------------------- stacks, pruning


@dataclass(frozen=True)
class AttentionPlan:
    """An attention layer with every default resolved."""

    kind: str
    heads: int
    kv_heads: int
    head_dim: int
    dim: int  # width of the queries and of the output
    kv_dim: int | None  # width keys/values are projected from (cross-attention); None = self
    mask: Mask
    position: Position | None
    dropout: float
    bias: bool
    qk_norm: bool
    feature_map: Literal["elu", "relu"]
    norm_kind: NormKind  # the block's norm kind, used by qk_norm
    norm_eps: float
    scale: float | None = None  # of the scores; None: 1/sqrt(head_dim)


@dataclass(frozen=True)
class PruneStage:
    """A token pruning stage with its token counts (``tokens_*`` include the CLS tokens).

    The plan of a ``token_prune`` node, and of each stage of a stack's ``prune``.
    """

    method: str
    keep: float | None
    r: int | None
    fuse: bool
    layer: int | None  # layer of the stack it belongs to (None: an explicit token_prune node)
    placement: (
        str  # "before" layer (dynamic), "inside" (between attention and MLP), "between" stacks
    )
    n_cls: int
    tokens_before: int
    tokens_after: int
    dim: int
    head_dim: int | None = None  # of the attention it reads (merge: key similarity)


@dataclass(frozen=True)
class LayerPlan:
    """One layer of a stack: its merged block and resolved attention, and its token counts."""

    index: int
    block: Block
    attention: AttentionPlan
    cross_attention: AttentionPlan | None
    hidden: int
    drop_path: float
    tokens: int  # tokens entering the layer (after a ``before`` stage)
    tokens_mlp: int  # tokens reaching the MLP (after an ``inside`` stage)
    prune: PruneStage | None
    override: int | None  # index of the override that shaped it, if any


@dataclass(frozen=True)
class StackPlan:
    """An encoder or decoder stack, resolved layer by layer: the plan of ``encoder`` and
    ``decoder`` nodes."""

    id: str
    op: str
    dim: int
    causal: bool
    layers: tuple[LayerPlan, ...]
    memory: str | None
    memory_shape: SeqShape | None
    relative_bias: RelativeBias | None
    relative_bias_heads: int | None

    @property
    def stages(self) -> list[PruneStage]:
        return [layer.prune for layer in self.layers if layer.prune is not None]


# ----------------------------------------------------------------------------- the other ops


@dataclass(frozen=True)
class EmbedPlan:
    """``embed``: its width and vocabulary, and the embedding whose weight it uses
    (``tie_root``: the first of a chain of ties; the node itself when it is not tied)."""

    dim: int
    vocab: int
    tie_root: str


@dataclass(frozen=True)
class PositionPlan:
    """``position``: the length of its table."""

    max_len: int


@dataclass(frozen=True)
class PoolPlan:
    """``pool``: its mode and the CLS tokens in front of the sequence it pools."""

    mode: PoolMode
    n_cls: int


@dataclass(frozen=True)
class ClassifyPlan:
    """``classify``: the width it reads, how it pools a sequence (``mode`` None: its input
    is already pooled, and ``n_cls`` 0), and its pre-logits layer with ``dim`` resolved (None:
    none)."""

    in_dim: int
    mode: PoolMode | None
    n_cls: int
    pre_logits: PreLogits | None = None


@dataclass(frozen=True)
class LMHeadPlan:
    """``lm_head``: its vocabulary, the width it reads, and the embedding whose weight it uses
    (``tie_root``; None when untied)."""

    vocab: int
    tie_root: str | None
    in_dim: int
    scale: float | None = None  # multiplies the input (T5's tied d_model**-0.5); None: none


NodePlan = EmbedPlan | PositionPlan | PoolPlan | ClassifyPlan | LMHeadPlan | StackPlan | PruneStage

P = TypeVar("P", EmbedPlan, PositionPlan, PoolPlan, ClassifyPlan, LMHeadPlan, StackPlan, PruneStage)


@dataclass
class NodeInfo:
    """A spec node (or input) with its inferred output shape and resolved plan."""

    id: str
    op: str  # the node's op, or "input"
    spec: Any
    shape: Shape
    inputs: list[str] = field(default_factory=list)
    plan: NodePlan | None = None

    @property
    def stack(self) -> StackPlan | None:
        """The plan of an encoder or decoder, else None."""
        return self.plan if isinstance(self.plan, StackPlan) else None

    @property
    def prune(self) -> PruneStage | None:
        """The stage of a ``token_prune`` node, else None."""
        return self.plan if isinstance(self.plan, PruneStage) else None

    def plan_as(self, kind: type[P]) -> P:
        """The node's plan, which must be a ``kind`` (``info.plan_as(EmbedPlan).vocab``)."""
        if not isinstance(self.plan, kind):
            raise TypeError(f"{self.op} node {self.id!r} has no {kind.__name__}")
        return self.plan


#: The ops that map each token on its own, so a sequence passes through them as it is: its
#: pruning state, and the stack whose attention it came from.
PASS_THROUGH_OPS = ("norm", "dropout")


def upstream_through(
    nodes: Mapping[str, NodeInfo], ref: str, ops: tuple[str, ...] = PASS_THROUGH_OPS
) -> NodeInfo | None:
    """The node whose output reaches ``ref`` through nodes of ``ops`` (norm and dropout): ``ref``
    itself when it is of another op; None where the walk meets a reference not in ``nodes`` (one
    the analysis refused). ``nodes``: ``Graph.nodes``, or the analysis's nodes so far."""
    info = nodes.get(ref)
    while info is not None and info.op in ops and info.inputs:
        info = nodes.get(info.inputs[0])
    return info
