"""``pruning.state``: the static keep count, CLS tokens never dropped, and stages refusing a
DynamicViT training policy."""

from __future__ import annotations

import pytest
import torch
from pruning_testing import DIM, METHODS, PATCHES, build, images, record_stage_calls, vit
from torch import nn

from archlab.compiler.nn import Stack
from archlab.compiler.nn.pruning import AttentionTopK, TokenMerge, TokenState, kept_count


def test_kept_count_is_the_compilers_count_capped() -> None:
    assert [kept_count(0.7, n) for n in (16, 12, 10, 1, 0)] == [12, 9, 7, 1, 0]
    assert kept_count(1.0, 5) == 5


# ------------------------------------------------------------------------------ CLS never dropped


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("count", [1, 2])
@pytest.mark.parametrize("train", [False, True])
def test_cls_tokens_are_never_dropped(method: str, count: int, train: bool) -> None:
    model = build(vit(METHODS[method], count=count), train=train)
    calls, remove = record_stage_calls(model)
    with torch.set_grad_enabled(train):
        _, trace = model.trace_tokens(images(3))
    remove()
    assert len(calls) == len(METHODS[method]["at"])
    for _, args, (out, _, state) in calls:
        assert torch.equal(out[:, :count], args[0][:, :count])  # CLS features pass unchanged
        assert (state.index[:, :count] == torch.arange(count)).all()
        assert (state.source[:, :count] == torch.arange(count)).all()
        if state.policy is not None:
            assert (state.policy[:, :count] == 1).all()
        if state.size is not None:
            assert (state.size[:, :count] == 1).all()
        assert (state.index[:, count:] != torch.arange(count)[:, None, None]).all()
    for record in trace.stages:
        assert record.n_cls == count
        assert (record.index[:, :count] == torch.arange(count)).all()
        assert trace.kept(record).shape == (3, PATCHES)


@pytest.mark.parametrize(
    "stage",
    [
        AttentionTopK(0.5, n_cls=1, fuse=True, name="e"),
        AttentionTopK(0.5, n_cls=1, fuse=False, name="e"),
        TokenMerge(4, n_cls=1, name="m"),
    ],
    ids=["evit-fused", "evit", "tome"],
)
def test_later_stages_refuse_a_dynamicvit_training_policy(stage: nn.Module) -> None:
    """An EViT or ToMe stage handed a DynamicViT training policy (which the compiler never
    builds) refuses it rather than letting dropped tokens reach live ones."""
    dense = build(vit(depth=3), train=True)
    stack = Stack(list(dense.encoder.layers), stages={1: stage}).train()
    x = torch.randn(2, 1 + PATCHES, DIM)
    policy = torch.ones(2, 1 + PATCHES)
    policy[:, 1:9] = 0
    with pytest.raises(ValueError, match="cannot follow a dynamic stage"):
        stack.forward_tokens(x, state=TokenState(policy=policy))
