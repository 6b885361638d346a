"""Every op of the spec's ``Node`` union has exactly one builder, one emitter and one cost, and
every pruning method one stage and one cost.

The ops come from the union members' ``op`` annotations, so a new node model without its table
entries fails here, not at the first spec that uses it.
"""

from __future__ import annotations

import typing

import pytest

from archlab.compiler.builders import BUILD
from archlab.compiler.codegen import EMIT
from archlab.compiler.cost import COST, PRUNE_COST
from archlab.compiler.nn.pruning import STAGES, TokenMerge
from archlab.specs.models import Node, PruneMethod


def node_ops() -> list[str]:
    union = typing.get_args(Node)[0]  # Annotated[Union[...], Field(...)] -> Union[...]
    ops = []
    for member in typing.get_args(union):
        annotation = member.model_fields["op"].annotation
        assert typing.get_origin(annotation) is typing.Literal, member
        ops += typing.get_args(annotation)
    return ops


def test_every_node_model_declares_one_op() -> None:
    ops = node_ops()
    assert len(ops) == len(set(ops)) == len(typing.get_args(typing.get_args(Node)[0]))


@pytest.mark.parametrize("table", [BUILD, EMIT, COST], ids=["BUILD", "EMIT", "COST"])
def test_the_table_covers_every_op_once(table: dict[str, object]) -> None:
    assert sorted(table) == sorted(node_ops())


@pytest.mark.parametrize("table", [STAGES, PRUNE_COST], ids=["STAGES", "PRUNE_COST"])
def test_every_pruning_method_has_its_stage_and_cost(table: dict[str, object]) -> None:
    assert sorted(table) == sorted(typing.get_args(PruneMethod))


def test_a_stage_is_built_from_its_plan() -> None:
    from archlab.specs.analysis import PruneStage

    plan = PruneStage("merge", None, 3, False, 1, "inside", 1, 17, 14, 32, head_dim=8)
    stage = STAGES[plan.method].from_plan(plan, "encoder.prune.1")
    assert isinstance(stage, TokenMerge) and (stage.r, stage.n_cls) == (3, 1)
    assert stage.need == "keys"
