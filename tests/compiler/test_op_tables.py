"""Every op of the spec's ``Node`` union has exactly one builder, one emitter and one cost.

The ops come from the union members' ``op`` annotations, so a new node model without its table
entries fails here, not at the first spec that uses it.
"""

from __future__ import annotations

import typing

import pytest

from archlab.compiler.builders import BUILD
from archlab.compiler.codegen import EMIT
from archlab.compiler.cost import COST
from archlab.specs.models import Node


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
