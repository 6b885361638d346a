"""The optimiser of ``arch train``: which parameters decay, and the warm-up + cosine schedule."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from archlab import compile_spec
from archlab.runners.optim import build_optimizer, parameter_groups, warmup_cosine

Doc = dict[str, Any]


def names_of(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> set[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {by_id[id(p)] for p in params}


def test_matrices_decay_and_positions_tokens_norms_biases_do_not(
    minimal_vit: Callable[[], Doc],
) -> None:
    model = compile_spec(minimal_vit(), seed=0)
    decay, rest = parameter_groups(model, 0.05)
    assert (decay["weight_decay"], rest["weight_decay"]) == (0.05, 0.0)
    decayed, kept = names_of(model, decay["params"]), names_of(model, rest["params"])
    assert not decayed & kept
    assert decayed | kept == {n for n, _ in model.named_parameters()}
    assert all(model.get_parameter(n).ndim >= 2 for n in decayed)
    assert "pos.weight" in kept and "cls.tokens" in kept  # matrices, but positions and tokens
    assert any(n.endswith(".bias") for n in kept) and not any(n.endswith(".bias") for n in decayed)
    assert any(n.startswith("head.") for n in decayed)  # the classifier's matrix decays


def test_tied_weights_are_optimised_once(minimal_gpt: Callable[[], Doc]) -> None:
    doc = minimal_gpt()
    model = compile_spec(doc, seed=0)
    groups = parameter_groups(model, 0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len({id(p) for p in model.parameters()})


def test_warmup_then_cosine_to_the_floor() -> None:
    param = torch.nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.AdamW([param], lr=1e-3)
    sched = warmup_cosine(opt, warmup_steps=10, total_steps=110, lr=1e-3, min_lr=1e-5)
    lrs = []
    for _ in range(120):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-4)  # 1/10 of the way up
    assert lrs[9] == pytest.approx(1e-3)  # warm-up done
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))  # then only down
    assert lrs[60] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[110] == pytest.approx(1e-5) and lrs[-1] == pytest.approx(1e-5)


def test_build_optimizer_is_adamw_with_the_groups(minimal_vit: Callable[[], Doc]) -> None:
    model = compile_spec(minimal_vit(), seed=0)
    opt = build_optimizer(model, lr=3e-4, weight_decay=0.05)
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert all(g["lr"] == 3e-4 for g in opt.param_groups)
