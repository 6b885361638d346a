"""``archlab.specs.analysis.infer``: the INFER table covers every op, and infer functions
called alone, on a context holding only the nodes they read."""

from __future__ import annotations

from typing import Any, get_args

from archlab import load_spec
from archlab.specs.analysis import INFER, NodeInfo, PoolPlan, PositionPlan, SeqShape, VecShape
from archlab.specs.analysis.context import Context
from archlab.specs.analysis.infer import infer_pool, infer_position
from archlab.specs.models import OPS, Node, PoolNode, PositionNode


def union_ops() -> list[str]:
    """The op of each member of the ``Node`` union, from its ``op`` Literal."""
    members = get_args(get_args(Node)[0])
    ops = []
    for member in members:
        (op,) = get_args(member.model_fields["op"].annotation)
        ops.append(op)
    return ops


def test_infer_has_one_entry_per_op_of_the_node_union() -> None:
    ops = union_ops()
    assert len(ops) == len(set(ops)) == len(get_args(get_args(Node)[0]))
    assert sorted(INFER) == sorted(ops)
    assert sorted(OPS) == sorted(ops)


def context_with(minimal_vit: Any, **infos: SeqShape) -> Context:
    """A context whose analysed nodes are only ``infos`` (id -> the sequence it outputs)."""
    ctx = Context(load_spec(minimal_vit()))
    for ref, shape in infos.items():
        ctx.infos[ref] = NodeInfo(ref, "norm", None, shape)
    return ctx


def test_infer_pool_alone(minimal_vit) -> None:
    ctx = context_with(minimal_vit, x=SeqShape(17, 64, n_cls=1, dim_from="nodes.x.dim"))
    info = infer_pool(ctx, "p", PoolNode(op="pool", input="x"))
    assert info is not None and not ctx.errors
    assert info.shape == VecShape(64, "nodes.x.dim")
    assert info.plan == PoolPlan(mode="cls", n_cls=1)
    assert info.stack is None and info.prune is None


def test_infer_pool_alone_reports_cls_without_cls_tokens(minimal_vit) -> None:
    ctx = context_with(minimal_vit, x=SeqShape(16, 64))
    assert infer_pool(ctx, "p", PoolNode(op="pool", input="x", mode="cls")) is None
    assert ctx.errors.items == [
        (
            "nodes.p.mode",
            "pool mode 'cls' needs a cls_token upstream, and there is none; use 'mean'",
        )
    ]


def test_infer_position_alone(minimal_vit) -> None:
    ctx = context_with(minimal_vit, x=SeqShape(10, 32))
    node = PositionNode(op="position", input="x", encoding="learned")
    info = infer_position(ctx, "pos", node)
    assert info is not None and info.plan == PositionPlan(max_len=10)
    assert info.shape == SeqShape(10, 32)
    short = PositionNode(op="position", input="x", encoding="learned", max_len=4)
    assert infer_position(ctx, "pos", short) is None
    [(path, message)] = ctx.errors.items
    assert path == "nodes.pos.max_len" and message.startswith("max_len 4 is shorter")
