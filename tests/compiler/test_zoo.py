"""Every zoo spec, the way timm tests every registered model: build, forward, backward, costs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import archlab
from archlab.compiler.flops import measure_spec_flops
from archlab.compiler.model import CompiledModel

ZOO = sorted((Path(__file__).parents[2] / "specs").glob("*.json"))
PRUNED = {"dynamicvit-deit-s", "evit-deit-s"}
BUILDABLE = ZOO
# Sequence length for the CPU forward/backward of long-context specs (costs use max_len).
SHORT = 64


def ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


@pytest.fixture(scope="module", params=BUILDABLE, ids=ids(BUILDABLE))
def zoo_model(request: pytest.FixtureRequest) -> CompiledModel:
    return archlab.compile_spec(request.param, seed=0)


def test_zoo_is_complete() -> None:
    names = {p.stem for p in ZOO}
    for required in (
        "vit-tiny-digits", "deit-small-16", "vit-base-16", "gpt2-small", "gpt-tiny", "bert-base",
        "transformer-base", "t5-small", "llama-style", "sliding-window-decoder", "prefix-lm",
        "linear-attention-decoder", "dynamicvit-deit-s", "evit-deit-s",
    ):  # fmt: skip
        assert required in names


@pytest.mark.parametrize("path", ZOO, ids=ids(ZOO))
def test_zoo_spec_has_origin(path: Path) -> None:
    spec = archlab.load_spec(path)
    assert spec.name == path.stem
    assert spec.description and len(spec.description) > 40


def test_params_equal_summary(zoo_model: CompiledModel) -> None:
    summary = zoo_model.summary()
    assert summary.params == sum(p.numel() for p in zoo_model.parameters())
    assert summary.params == sum(row.params for row in summary.nodes)


def test_forward_backward(zoo_model: CompiledModel) -> None:
    zoo_model.train()
    inputs = zoo_model.example_inputs(batch=2, length=SHORT)
    out = zoo_model(**inputs)
    outs = out.values() if isinstance(out, dict) else [out]
    loss = sum(o.float().square().mean() for o in outs)
    loss.backward()
    for name, p in zoo_model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    expected = zoo_model.summary().outputs
    for node_id, tensor in (
        out.items() if isinstance(out, dict) else [(zoo_model.spec.outputs[0], out)]
    ):
        declared = expected[node_id]
        assert tensor.shape[0] == 2
        assert len(tensor.shape) == len(declared)
        assert tensor.shape[-1] == declared[-1]


@pytest.mark.parametrize("path", BUILDABLE, ids=ids(BUILDABLE))
def test_flops_match_flop_counter(path: Path) -> None:
    """The graph-only cost model agrees with FlopCounterMode on the built module (within 5%)."""
    estimate = archlab.compile_spec(path, device="meta").summary().flops
    measured = measure_spec_flops(path)
    assert measured > 0
    assert abs(estimate - measured) <= 0.05 * measured, (estimate, measured)


@pytest.mark.parametrize("path", ZOO, ids=ids(ZOO))
def test_json_round_trip_keeps_hash(path: Path) -> None:
    spec = archlab.load_spec(path)
    again = archlab.load_spec(json.loads(spec.model_dump_json(by_alias=True)))
    assert again == spec
    assert archlab.spec_hash(again) == archlab.spec_hash(spec)
    canonical = archlab.load_spec(archlab.canonical_form(spec))
    assert archlab.spec_hash(canonical) == archlab.spec_hash(spec)


def test_flops_counted_on_the_cpu_too() -> None:
    """On the CPU, SDPA runs a kernel FlopCounterMode has no formula for; archlab registers one."""
    from archlab.compiler.flops import measure_flops

    model = archlab.compile_spec(ZOO[0].parent / "vit-tiny-digits.json")
    assert measure_flops(model) == model.summary().flops


@pytest.mark.parametrize(
    ("stem", "published", "tolerance"),
    [
        ("deit-small-16", 22_050_664, 0.0),  # timm deit_small_patch16_224
        ("vit-base-16", 86_567_656, 0.0),  # timm vit_base_patch16_224
        ("gpt2-small", 124_439_808, 0.0),  # HF GPT2LMHeadModel, tied embeddings
        ("bert-base", 109_482_240, 0.01),  # HF BertModel ("110M"): no token types, no pooler here
    ],
)
def test_published_parameter_counts(stem: str, published: int, tolerance: float) -> None:
    model = archlab.compile_spec(f"specs/{stem}.json", device="meta")
    params = model.summary().params
    assert abs(params - published) <= tolerance * published, params


def test_deit_small_macs_match_the_paper() -> None:
    """DeiT-S is quoted at 4.6 G "FLOPs" (multiply-adds): our macs, half our flops."""
    summary = archlab.compile_spec("specs/deit-small-16.json", device="meta").summary()
    assert summary.macs == pytest.approx(4.6e9, rel=0.01)


@pytest.mark.parametrize("stem", sorted(PRUNED))
def test_pruned_specs_save_a_third_of_the_flops_and_really_shorten(stem: str) -> None:
    dense = archlab.compile_spec("specs/deit-small-16.json", device="meta").summary()
    model = archlab.compile_spec(f"specs/{stem}.json", device="meta")
    pruned = model.summary()
    assert pruned.flops < 0.7 * dense.flops  # keep 0.7 at 3/6/9 saves about a third
    assert pruned.macs == pytest.approx(3.0e9, rel=0.03)  # the papers: 2.9 G and 3.0 G
    final = model.graph.shape("encoder").length
    assert final == (69 if stem.startswith("dynamic") else 72)  # 1 + 68; 1 + 70 + 1 fused
    model = archlab.compile_spec(f"specs/{stem}.json", seed=0).eval()
    with torch.no_grad():
        _, trace = model.trace_tokens(**model.example_inputs(batch=2))
    assert trace.features["encoder"].shape == (2, final, 384)
