"""The compile paths compute what the reference path computes.

For the small version of every zoo spec: the model under ``torch.compile`` (the ``aot_eager``
backend, which runs dynamo's graph capture and AOT autograd without code generation, so 19 specs
fit in seconds) gives the eager model's outputs, and the eager model with its automatically
chosen kernels gives the outputs of the same weights with every attention forced to the written-out
``reference`` kernel. Two specs also go through inductor, the backend ``--compile`` uses (slow).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import archlab
from archlab.specs.shrink import small_version

ZOO = sorted((Path(__file__).parents[2] / "specs").glob("*.json"))


def outputs(out: Any) -> list[torch.Tensor]:
    return list(out.values()) if isinstance(out, dict) else [out]


def pair(path: Path) -> tuple[Any, Any, dict[str, torch.Tensor]]:
    doc = small_version(json.loads(path.read_text()))
    model = archlab.compile_spec(doc, seed=0).eval()
    reference = archlab.compile_spec(doc, seed=0, attention_kernel="reference").eval()
    reference.load_state_dict(model.state_dict())
    return model, reference, model.example_inputs(batch=2)


@pytest.mark.parametrize("path", ZOO, ids=[p.stem for p in ZOO])
def test_compiled_and_kernel_paths_equal_the_reference_path(path: Path) -> None:
    model, reference, inputs = pair(path)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        expected = outputs(reference(**inputs))
        for got in (outputs(model(**inputs)), outputs(compiled(**inputs))):
            for a, b in zip(got, expected, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.parametrize("stem", ["deit-small-16", "dynamicvit-deit-s"])
def test_inductor_equals_the_reference_path(stem: str) -> None:
    model, reference, inputs = pair(Path(__file__).parents[2] / "specs" / f"{stem}.json")
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        for a, b in zip(outputs(compiled(**inputs)), outputs(reference(**inputs)), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()
