"""Every zoo spec traces into one torch.compile graph: no graph breaks, in eval and in training.

Each spec is checked in its ``small_version`` (same structure, fewer layers, narrower widths,
shorter sequences), with ``torch._dynamo.explain`` on ``example_inputs(batch=2)``:
- with the kernels the CPU build chooses, in eval and train mode, and for specs with token
  pruning also with the kept-token trace (``__trace=True``);
- with FlexAttention forced (``attention_kernel="flex"``) for the specs whose masks or position
  biases make the CUDA build choose it; FlexAttention has no CPU backward, so under no_grad.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import archlab
from archlab.compiler.model import CompiledModel
from archlab.compiler.nn.attention import FLEX_IMPORTABLE, Attention
from archlab.specs.analysis import has_pruning
from archlab.specs.shrink import small_version

ZOO = sorted((Path(__file__).parents[2] / "specs").glob("*.json"))
MODES = ("eval", "train")


def small_doc(path: Path) -> dict[str, Any]:
    return small_version(json.loads(path.read_text()))


def explain(model: CompiledModel, mode: str, trace: bool = False) -> Any:
    model.train(mode == "train")
    inputs: dict[str, Any] = dict(model.example_inputs(batch=2))
    if trace:
        inputs["__trace"] = True
    torch._dynamo.reset()
    try:
        return torch._dynamo.explain(model)(**inputs)
    finally:
        torch._dynamo.reset()


def describe(explained: Any) -> str:
    lines = []
    for reason in explained.break_reasons:
        where = "; ".join(f"{f.filename}:{f.lineno}" for f in reason.user_stack[-2:])
        lines.append(f"{reason.reason} at {where}")
    return "\n".join(lines)


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _flex_runs(model: CompiledModel) -> bool:
    """Whether the CUDA build would run FlexAttention somewhere in `model` (built on the CPU).

    On CUDA, an attention that needs a mask tensor (a mask other than none/causal, or an ALiBi
    or relative-bias score) and has no attention dropout takes flex; the CPU build takes
    sdpa_mask there.
    """
    return any(
        isinstance(m, Attention) and m.kernel.name == "sdpa_mask" and m.attn_dropout == 0
        for m in model.modules()
    )


SMALL = {p.stem: archlab.compile_spec(small_doc(p), seed=0) for p in ZOO}
PRUNED = [name for name, model in SMALL.items() if has_pruning(model.graph)]
FLEX = [name for name, model in SMALL.items() if _flex_runs(model)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(SMALL))
def test_no_graph_breaks(name: str, mode: str) -> None:
    explained = explain(SMALL[name], mode)
    assert explained.graph_break_count == 0, describe(explained)
    assert explained.graph_count == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", PRUNED)
def test_no_graph_breaks_with_trace(name: str, mode: str) -> None:
    explained = explain(SMALL[name], mode, trace=True)
    assert explained.graph_break_count == 0, describe(explained)
    assert explained.graph_count == 1


@pytest.mark.skipif(not FLEX_IMPORTABLE, reason="FlexAttention needs torch >= 2.5")
@pytest.mark.parametrize("name", FLEX)
def test_no_graph_breaks_with_flex(name: str) -> None:
    """Eval only: flex takes no dropout, so training traces the same attention code."""
    model = archlab.compile_spec(SMALL[name].spec, seed=0, attention_kernel="flex")
    assert any(isinstance(m, Attention) and m.kernel.name == "flex" for m in model.modules())
    with torch.no_grad():  # FlexAttention has no CPU backward
        explained = explain(model, "eval")
    assert explained.graph_break_count == 0, describe(explained)
    assert explained.graph_count == 1


def test_zoo_exercises_every_path() -> None:
    """The parametrisations above are not empty: pruning, flex, cross-attention all occur."""
    assert {"dynamicvit-deit-s", "evit-deit-s"} <= set(PRUNED)
    assert {"alibi-decoder", "sliding-window-decoder", "prefix-lm"} <= set(FLEX)
    assert any(
        m.cross_attention is not None
        for m in SMALL["t5-small"].modules()
        if hasattr(m, "norm_cross")
    )


def test_explain_counts_a_real_break() -> None:
    """The check can fail: a host sync in forward shows up as a graph break."""

    class Syncs(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum().item() > 0:  # data-dependent Python branch
                return x + 1
            return x - 1

    explained = torch._dynamo.explain(Syncs())(torch.ones(3))
    assert explained.graph_break_count >= 1
