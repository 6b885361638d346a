"""``CompiledModel.freeze()``: frozen outputs equal eager ones on every zoo spec, the fallbacks
when oneDNN is missing, off or wrong, and everything a frozen model refuses."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

import archlab
from archlab.compiler import freeze as freeze_module
from archlab.compiler.errors import CompileError
from archlab.compiler.freeze import FrozenModelError
from archlab.compiler.model import CompiledModel
from archlab.compiler.nn.linear import Linear
from archlab.compiler.nn.packed import PackedLinear, onednn_problem
from archlab.specs.shrink import small_version

ROOT = Path(__file__).resolve().parents[2]
ONEDNN = onednn_problem(torch.float32) is None
needs_onednn = pytest.mark.skipif(not ONEDNN, reason=f"oneDNN: {onednn_problem(torch.float32)}")


def build(path: Path | dict[str, Any], **options: Any) -> CompiledModel:
    doc = small_version(json.loads(path.read_text())) if isinstance(path, Path) else path
    return archlab.compile_spec(doc, seed=0, **options).eval()


def largest_gap(a: Any, b: Any) -> float:
    """The largest difference of two outputs relative to the first's largest magnitude."""
    if isinstance(a, dict):
        return max(largest_gap(a[k], b[k]) for k in a)
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-6))


def outputs(model: CompiledModel, inputs: dict[str, Tensor]) -> Any:
    with torch.no_grad():
        return model(**inputs)


def linears(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m) in (nn.Linear, Linear)]


@pytest.fixture(autouse=True)
def _quiet_mkldnn_flags() -> Iterator[None]:
    # torch.backends.mkldnn.flags() warns that TF32 on oneDNN is for Intel GPUs only
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "TF32 acceleration on top of oneDNN")
        yield


# ------------------------------------------------------------------------------ equality


@needs_onednn
def test_frozen_outputs_equal_eager_on_every_zoo_spec(zoo_path: Path) -> None:
    model = build(zoo_path)
    inputs = model.example_inputs(batch=3)
    eager = outputs(model, inputs)
    shared = freeze_module._shared_weights(model)
    untied = [m for m in linears(model) if id(m.weight) not in shared]
    model.freeze()
    report = model.frozen
    assert report is not None and report.packed == len(untied) > 0
    assert not [m for m in linears(model) if id(m.weight) not in shared]  # all packed
    assert largest_gap(eager, outputs(model, inputs)) < 1e-4


@needs_onednn
def test_a_padded_batch_and_the_pruning_trace_match_too() -> None:
    model = build(ROOT / "specs" / "bert-base.json")
    inputs = model.example_inputs(batch=3, length=10)
    name = next(iter(inputs))
    mask = torch.ones_like(inputs[name], dtype=torch.bool)
    mask[0, 6:] = False
    inputs[f"{name}_mask"] = mask
    eager = outputs(model, inputs)
    assert largest_gap(eager, outputs(model.freeze(), inputs)) < 1e-4

    pruned = build(ROOT / "specs" / "dynamicvit-deit-s.json")
    image = pruned.example_inputs(batch=2)
    with torch.no_grad():
        out, trace = pruned.trace_tokens(**image)
    out_frozen, trace_frozen = pruned.freeze().trace_tokens(**image)
    assert largest_gap(out, out_frozen) < 1e-4
    for stage in trace.stages:
        assert torch.equal(trace.kept(stage), trace_frozen.kept(stage))


@needs_onednn
def test_activations_are_fused_into_the_linear_before_them() -> None:
    model = build(ROOT / "specs" / "dynamicvit-tiny-digits.json").freeze()
    mlp = model.encoder.layers[0].mlp
    assert isinstance(mlp.fc1, PackedLinear) and mlp.fc1.fused == "gelu"
    assert isinstance(mlp.act, nn.Identity)
    predictor = next(m for m in model.modules() if hasattr(m, "predictor")).predictor
    assert predictor.input[1].fused == "gelu" and isinstance(predictor.input[2], nn.Identity)
    predictors = sum(1 for m in model.modules() if hasattr(m, "predictor"))
    layers = len(model.encoder.layers)
    # every MLP's fc1, and each predictor's three linears followed by a GELU
    assert model.frozen is not None and model.frozen.fused == layers + 3 * predictors


@needs_onednn
@pytest.mark.parametrize("activation", ["gelu_tanh", "relu", "silu", "swiglu"])
def test_each_activation_fuses_or_stays(activation: str, minimal_vit: Any) -> None:
    doc = minimal_vit()
    doc["nodes"]["enc"]["block"]["mlp"] = {"activation": activation}
    model = build(doc)
    inputs = model.example_inputs(batch=2)
    eager = outputs(model, inputs)
    model.freeze()
    fc1 = model.enc.layers[0].mlp.fc1
    assert fc1.fused == ("none" if activation == "swiglu" else activation)
    assert largest_gap(eager, outputs(model, inputs)) < 1e-4


@needs_onednn
def test_a_tied_head_keeps_its_weight_and_generation_is_unchanged() -> None:
    model = build(ROOT / "specs" / "gpt-tiny.json")
    ids = model.example_inputs(batch=2, length=5)["ids"]
    greedy = model.generate(ids, max_new_tokens=6)
    model.freeze()
    assert torch.equal(model.generate(ids, max_new_tokens=6), greedy)


# ----------------------------------------------------------------------------- fallbacks


def test_onednn_switched_off_leaves_the_linears_and_says_why() -> None:
    model = build(ROOT / "specs" / "vit-tiny-digits.json")
    inputs = model.example_inputs(batch=2)
    eager = outputs(model, inputs)
    count = len(linears(model))
    with torch.backends.mkldnn.flags(enabled=False):
        model.freeze()
    assert model.frozen is not None and model.frozen.packed == 0
    assert len(linears(model)) == count
    (reason,) = model.frozen.unpacked
    assert "switched off" in reason
    paths = [p for p in model.summary().paths if p["name"] == "frozen linears"]
    assert paths == [
        {
            "name": "frozen linears",
            "choice": "F.linear (fallback)",
            "reason": reason,
            "count": count,
        }
    ]
    assert torch.equal(outputs(model, inputs), eager)
    with pytest.raises(FrozenModelError):
        model.train()


@pytest.mark.skipif(
    onednn_problem(torch.bfloat16) is not None, reason=f"{onednn_problem(torch.bfloat16)}"
)
def test_bfloat16_weights_pack_on_a_cpu_with_native_bfloat16() -> None:
    model = build(ROOT / "specs" / "bert-base.json", dtype="bfloat16")
    inputs = model.example_inputs(batch=2, length=16)
    eager = outputs(model, inputs)
    model.freeze()
    assert model.frozen is not None and model.frozen.packed > 0 and not model.frozen.unpacked
    assert largest_gap(eager.float(), outputs(model, inputs).float()) < 3e-2


def test_float64_weights_are_not_packed() -> None:
    model = build(ROOT / "specs" / "vit-tiny-digits.json", dtype="float64").freeze()
    assert model.frozen is not None and model.frozen.packed == 0
    assert list(model.frozen.unpacked) == [
        "float64 weights: packing is used for float32 and bfloat16 only"
    ]


def test_a_missing_operator_is_a_reason_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = onednn_problem.__wrapped__  # the uncached check
    monkeypatch.setattr(torch.ops, "mkldnn", SimpleNamespace())
    assert "no mkldnn._linear_pointwise" in probe(torch.float32)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert probe(torch.float32) == "this PyTorch build has no oneDNN (MKLDNN)"


@needs_onednn
def test_an_operator_that_fails_or_disagrees_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = onednn_problem.__wrapped__
    real = torch.ops.mkldnn

    def failing(*args: Any) -> Tensor:
        raise RuntimeError("could not create a primitive descriptor\nsecond line")

    def wrong(*args: Any) -> Tensor:
        return real._linear_pointwise(*args) + 1.0

    for op, reason in ((failing, "failed on this CPU: could not create"), (wrong, "disagreed")):
        fake = SimpleNamespace(_reorder_linear_weight=real._reorder_linear_weight)
        fake._linear_pointwise = op  # type: ignore[attr-defined]
        monkeypatch.setattr(torch.ops, "mkldnn", fake)
        problem = probe(torch.float32)
        assert problem is not None and reason in problem

    monkeypatch.setattr(freeze_module, "packing_problem", lambda dtype: "the probe failed")
    model = build(ROOT / "specs" / "vit-tiny-digits.json")
    count = len(linears(model))
    model.freeze()
    assert model.frozen is not None and model.frozen.unpacked == {"the probe failed": count}


# ------------------------------------------------------------------------------ refusals


@pytest.fixture
def frozen() -> CompiledModel:
    return build(ROOT / "specs" / "vit-tiny-digits.json").freeze()


def test_training_and_gradients_are_refused(frozen: CompiledModel) -> None:
    with pytest.raises(FrozenModelError, match="cannot train"):
        frozen.train()
    with pytest.raises(FrozenModelError, match="take no gradient"):
        frozen.requires_grad_()
    with pytest.raises(FrozenModelError, match="choose the device and dtype"):
        frozen.to(torch.float64)
    image = torch.randn(2, 1, 8, 8, requires_grad=True)
    with pytest.raises(FrozenModelError, match="requires a gradient"):
        frozen(image)
    frozen.eval()  # still allowed
    assert not any(p.requires_grad for p in frozen.parameters())
    assert not frozen(image.detach()).requires_grad  # runs under no_grad even with grad on


def test_freezing_twice_changes_nothing(frozen: CompiledModel) -> None:
    before = frozen.frozen
    assert frozen.freeze() is frozen and frozen.frozen is before


@needs_onednn
def test_a_frozen_model_saves_the_weights_it_had(tmp_path: Path) -> None:
    model = build(ROOT / "specs" / "vit-tiny-digits.json")
    model.save(tmp_path / "eager.safetensors")
    before = model.summary().weight_bytes
    model.freeze().save(tmp_path / "frozen.safetensors")
    eager = load_file(tmp_path / "eager.safetensors")
    again = load_file(tmp_path / "frozen.safetensors")
    assert eager.keys() == again.keys()
    assert all(torch.equal(eager[name], again[name]) for name in eager)
    assert model.summary().weight_bytes == before
    assert isinstance(archlab.load_compiled(tmp_path / "frozen.safetensors"), CompiledModel)


def test_explaining_a_frozen_model_is_refused(frozen: CompiledModel) -> None:
    with pytest.raises(FrozenModelError, match="gradient"):
        archlab.explain(frozen, method="generic", image=torch.randn(1, 1, 8, 8))


def test_an_unknown_compile_mode_is_refused() -> None:
    model = build(ROOT / "specs" / "vit-tiny-digits.json")
    with pytest.raises(CompileError, match="unknown compile mode"):
        model.freeze(compile=True, mode="fastest")
    assert model.frozen is None


@pytest.mark.slow
def test_compiled_freezing_on_the_cpu_matches_eager() -> None:
    """compile=True takes inductor's own freezing instead of the eager packing."""
    model = build(ROOT / "specs" / "vit-tiny-digits.json")
    inputs = model.example_inputs(batch=2)
    eager = outputs(model, inputs)
    torch._dynamo.reset()
    try:
        model.freeze(compile=True)
        assert model.frozen is not None and model.frozen.compiled == "default, inductor freezing"
        assert model.frozen.packed == 0
        assert largest_gap(eager, outputs(model, inputs)) < 1e-4
        assert any(p["choice"] == "torch.compile" for p in model.summary().paths)
    finally:
        torch._dynamo.reset()
