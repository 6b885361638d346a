"""The compiled module: naming, inputs, masks, outputs, kernels, saving, compile and export."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

import archlab
from archlab import SpecError
from archlab.compiler.devices import DeviceError
from archlab.compiler.errors import CompileError

ROOT = Path(__file__).parents[2]


def gpt(**block: Any) -> dict[str, Any]:
    attention = {"heads": 4, "position": "rotary", **block.pop("attention", {})}
    return {
        "version": 1,
        "name": "tiny-gpt",
        "inputs": {"ids": {"kind": "tokens", "vocab_size": 50, "max_len": 32, "pad_id": 0}},
        "nodes": {
            "tok": {"op": "embed", "input": "ids", "dim": 32},
            "dec": {
                "op": "decoder",
                "input": "tok",
                "depth": 2,
                "block": {"attention": attention, **block},
            },
            "out": {"op": "norm", "input": "dec"},
            "logits": {"op": "lm_head", "input": "out", "tie": "tok"},
        },
        "outputs": "logits",
    }


def encoder(encoding: str | None = None, **attention: Any) -> dict[str, Any]:
    """Features -> (additive ``encoding``) -> a 2-layer encoder with the given attention settings."""
    nodes: dict[str, Any] = {"proj": {"op": "dropout", "input": "x", "p": 0.0}}
    src = "proj"
    if encoding is not None:
        nodes["pos"] = {"op": "position", "input": "proj", "encoding": encoding}
        src = "pos"
    nodes["enc"] = {
        "op": "encoder",
        "input": src,
        "depth": 2,
        "block": {"attention": {"heads": 2, **attention}},
    }
    return {
        "version": 1,
        "inputs": {"x": {"kind": "features", "dim": 16, "max_len": 12}},
        "nodes": nodes,
        "outputs": "enc",
    }


def f64(spec: Any, **kw: Any) -> archlab.compiler.CompiledModel:
    model = archlab.compile_spec(spec, dtype="float64", seed=0, **kw)
    return model.eval()


def test_state_dict_keys_read_like_the_spec() -> None:
    model = archlab.compile_spec(gpt())
    keys = set(model.state_dict())
    assert "dec.layers.1.attention.qkv.weight" in keys
    assert "tok.weight" in keys
    assert model.logits.weight is model.tok.weight  # tied: one tensor


def test_inputs_by_name_and_positionally() -> None:
    model = f64(gpt())
    ids = torch.randint(1, 50, (2, 10))
    torch.testing.assert_close(model(ids=ids), model(ids))


def test_several_outputs_return_a_dict() -> None:
    spec = gpt()
    spec["outputs"] = ["logits", "out"]
    out = f64(spec)(torch.randint(1, 50, (2, 7)))
    assert set(out) == {"logits", "out"}
    assert out["logits"].shape == (2, 7, 50) and out["out"].shape == (2, 7, 32)


def test_causal_model_never_sees_the_future() -> None:
    model = f64(gpt())
    ids = torch.randint(1, 50, (1, 16))
    changed = ids.clone()
    changed[0, 9:] = torch.randint(1, 50, (7,))
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_trailing_padding_changes_nothing() -> None:
    """pad_id tokens at the end are masked as keys everywhere (causal or not)."""
    for spec in (gpt(), gpt(attention={"mask": "none"})):
        model = f64(spec)
        ids = torch.randint(1, 50, (1, 10))
        padded = torch.cat([ids, torch.zeros(1, 6, dtype=torch.long)], dim=1)
        torch.testing.assert_close(model(ids), model(padded)[:, :10])


def test_source_padding_changes_nothing_through_cross_attention() -> None:
    """Padding of the encoder's input is masked in the encoder and in the decoder's cross-attention."""
    spec = {
        "version": 1,
        "inputs": {
            "src": {"kind": "tokens", "vocab_size": 30, "max_len": 16, "pad_id": 0},
            "tgt": {"kind": "tokens", "vocab_size": 30, "max_len": 16, "pad_id": 0},
        },
        "nodes": {
            "src_emb": {"op": "embed", "input": "src", "dim": 16},
            "tgt_emb": {"op": "embed", "input": "tgt", "tie": "src_emb"},
            "enc": {
                "op": "encoder",
                "input": "src_emb",
                "depth": 2,
                "block": {"attention": {"heads": 2}},
            },
            "dec": {
                "op": "decoder",
                "input": "tgt_emb",
                "memory": "enc",
                "depth": 2,
                "block": {"attention": {"heads": 2, "position": "rotary"}},
            },
            "logits": {"op": "lm_head", "input": "dec", "tie": "src_emb"},
        },
        "outputs": "logits",
    }
    model = f64(spec)
    src = torch.randint(1, 30, (1, 7))
    tgt = torch.randint(1, 30, (1, 5))
    padded = torch.cat([src, torch.zeros(1, 9, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(src=src, tgt=tgt), model(src=padded, tgt=tgt))
    changed = padded.clone()
    changed[0, 3] = (changed[0, 3] % 29) + 1
    assert not torch.allclose(model(src=src, tgt=tgt), model(src=changed, tgt=tgt))


def test_explicit_mask_argument_equals_pad_id() -> None:
    spec = encoder()
    model = f64(spec)
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[:, 8:] = False
    torch.testing.assert_close(model(x, x_mask=mask)[:, :8], model(x[:, :8]))


def test_left_padding_with_causal_mask_gives_no_nan() -> None:
    model = f64(gpt())
    ids = torch.randint(1, 50, (2, 12))
    ids[:, :4] = 0  # left padding: the first queries see no real key at all
    out = model(ids)
    assert torch.isfinite(out).all()


def test_encoder_without_positions_is_permutation_equivariant() -> None:
    model = f64(encoder())
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    perm = torch.randperm(12)
    torch.testing.assert_close(model(x)[:, perm], model(x[:, perm]))
    assert not torch.allclose(
        f64(encoder("sinusoidal"))(x)[:, perm], f64(encoder("sinusoidal"))(x[:, perm])
    )


@pytest.mark.parametrize(
    "attention",
    [
        {"mask": "causal"},
        {"mask": {"kind": "sliding_window", "window": 3}},
        {"mask": {"kind": "block_local", "block": 4, "causal": True}},
        {"mask": {"kind": "prefix", "prefix_len": 5}},
        {"position": "alibi"},
        {"position": "relative_bias"},
        {"position": "rotary", "kv_heads": 1},
    ],
)
def test_reference_kernel_equals_the_chosen_one(attention: dict[str, Any]) -> None:
    spec = encoder(**attention)
    fast, reference = f64(spec), f64(spec, attention_kernel="reference")
    reference.load_state_dict(fast.state_dict())
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 9:] = False
    torch.testing.assert_close(fast(x, x_mask=mask), reference(x, x_mask=mask))


def test_input_names_cannot_shadow_generated_code() -> None:
    """Inputs named like archlab's run-time helpers still compile and run."""
    spec = {
        "version": 1,
        "inputs": {"_check_tokens": {"kind": "tokens", "vocab_size": 10, "max_len": 4}},
        "nodes": {
            "v_emb": {"op": "embed", "input": "_check_tokens", "dim": 8},
            "Tensor": {"op": "pool", "input": "v_emb", "mode": "mean"},
        },
        "outputs": "Tensor",
    }
    model = archlab.compile_spec(spec)
    assert model(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 8)


def test_summary_reports_kernels_and_why() -> None:
    summary = archlab.compile_spec(encoder(mask={"kind": "sliding_window", "window": 3})).summary()
    row = next(r for r in summary.nodes if r.id == "enc")
    assert row.kernel == "sdpa_mask"
    assert "sliding_window" in (row.kernel_reason or "")
    assert "CUDA" in (row.kernel_reason or "")
    doc = summary.to_dict()
    assert {"params", "flops", "macs", "nodes"} <= set(doc)
    assert all(
        {"id", "op", "shape", "params", "flops", "macs"} <= set(node) for node in doc["nodes"]
    )


def test_run_time_input_checks() -> None:
    model = archlab.compile_spec(gpt())
    with pytest.raises(SpecError, match="more than max_len 32") as exc:
        model(torch.randint(1, 50, (1, 40)))
    assert exc.value.errors[0][0] == "inputs.ids"
    with pytest.raises(SpecError, match="int64"):
        model(torch.randn(1, 4))
    with pytest.raises(SpecError, match=r"\(B, T\)"):
        model(torch.randint(1, 50, (4,)))
    with pytest.raises(SpecError, match="ids_mask must be a bool"):
        model(torch.randint(1, 50, (1, 4)), ids_mask=torch.ones(1, 4))
    vit = archlab.compile_spec(ROOT / "specs/vit-tiny-digits.json")
    with pytest.raises(SpecError, match=r"\(B, 1, 8, 8\)"):
        vit(torch.randn(2, 3, 8, 8))


def test_bad_device_and_dtype_are_user_errors() -> None:
    with pytest.raises(CompileError, match="unknown dtype 'float8'"):
        archlab.compile_spec(gpt(), dtype="float8")
    with pytest.raises(DeviceError, match="unknown device"):
        archlab.compile_spec(gpt(), device="tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            archlab.compile_spec(gpt(), device="cuda")


def test_unknown_attention_kernel_is_a_user_error() -> None:
    with pytest.raises(CompileError, match="unknown attention kernel 'fast'"):
        archlab.compile_spec(gpt(), attention_kernel="fast")


def test_forced_kernel_falls_back_where_it_cannot_run() -> None:
    model = archlab.compile_spec(
        encoder(mask={"kind": "sliding_window", "window": 3}), attention_kernel="sdpa"
    )
    assert {layer.attention.kernel.name for layer in model.enc.layers} == {"sdpa_mask"}


@pytest.mark.parametrize(
    ("dtype", "torch_dtype"), [("bfloat16", torch.bfloat16), ("float16", torch.float16)]
)
def test_half_precision_weights_forward(dtype: str, torch_dtype: torch.dtype) -> None:
    model = archlab.compile_spec(gpt(), dtype=dtype).eval()
    out = model(torch.randint(1, 50, (2, 8)))
    assert out.dtype == torch_dtype and torch.isfinite(out.float()).all()
    reference = archlab.compile_spec(gpt(), dtype="float32").eval()
    reference.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    ids = torch.randint(1, 50, (2, 8))
    torch.testing.assert_close(model(ids).float(), reference(ids), atol=0.1, rtol=0.05)


def test_save_and_load_compiled(tmp_path: Path) -> None:
    model = f64(gpt())
    path = tmp_path / "tiny.safetensors"
    model.save(path)
    loaded = archlab.load_compiled(path).eval()
    assert loaded.spec_hash == model.spec_hash
    assert next(loaded.parameters()).dtype == torch.float64
    ids = torch.randint(1, 50, (2, 8))
    torch.testing.assert_close(loaded(ids), model(ids))
    assert loaded.logits.weight is loaded.tok.weight


def test_load_compiled_refuses_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="no such file"):
        archlab.load_compiled(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(CompileError, match="not a safetensors file"):
        archlab.load_compiled(junk)
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(CompileError, match="carries no archlab spec"):
        archlab.load_compiled(plain)


def test_add_and_concat_carry_masks() -> None:
    spec = {
        "version": 1,
        "inputs": {
            "a": {"kind": "tokens", "vocab_size": 20, "max_len": 8, "pad_id": 0},
            "b": {"kind": "tokens", "vocab_size": 20, "max_len": 8, "pad_id": 0},
        },
        "nodes": {
            "ea": {"op": "embed", "input": "a", "dim": 16},
            "eb": {"op": "embed", "input": "b", "tie": "ea"},
            "both": {"op": "concat", "inputs": ["ea", "eb"]},
            "wide": {"op": "concat", "inputs": ["ea", "eb"], "axis": "feature"},
            "sum": {"op": "add", "inputs": ["ea", "eb"]},
            "enc": {
                "op": "encoder",
                "input": "both",
                "depth": 1,
                "block": {"attention": {"heads": 2}},
            },
            "head": {"op": "classify", "input": "enc", "classes": 3},
            "pooled": {"op": "pool", "input": "sum", "mode": "mean"},
            "wpool": {"op": "pool", "input": "wide", "mode": "max"},
        },
        "outputs": ["head", "pooled", "wpool"],
    }
    model = f64(spec)
    a = torch.tensor([[3, 4, 5, 0, 0, 0, 0, 0]])
    b = torch.tensor([[6, 7, 0, 0, 0, 0, 0, 0]])
    out = model(a=a, b=b)
    assert out["head"].shape == (1, 3) and out["wpool"].shape == (1, 32)
    # padding is excluded from the mean: only the first (real in both) positions count
    expected = (model.ea(a) + model.eb(b))[:, :2].mean(dim=1)
    torch.testing.assert_close(out["pooled"], expected)


def test_show_code_is_straight_line_python() -> None:
    model = archlab.compile_spec(gpt())
    assert model.code.startswith("def forward(self, ids, ids_mask")
    assert "for " not in model.code


SMALL_FOR_COMPILE = ["gpt-tiny", "vit-tiny-digits", "prefix-lm", "linear-attention-decoder"]


def _small(stem: str) -> dict[str, Any]:
    """A zoo spec cut down to 1 layer and short inputs so compile/export tests stay quick."""
    spec = copy.deepcopy(
        archlab.load_spec(ROOT / f"specs/{stem}.json").model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
    )
    for node in spec["nodes"].values():
        if node["op"] in ("encoder", "decoder"):
            node["depth"] = 1
            node["overrides"] = []
    for inp in spec["inputs"].values():
        if "max_len" in inp:
            inp["max_len"] = min(inp["max_len"], 96)
        if inp.get("vocab_size", 0) > 1000:
            inp["vocab_size"] = 1000
    for node in spec["nodes"].values():
        if node["op"] == "position":
            node.pop("max_len", None)
    return spec


@pytest.mark.slow
@pytest.mark.parametrize("stem", SMALL_FOR_COMPILE)
def test_torch_compile_fullgraph(stem: str) -> None:
    torch._dynamo.reset()
    model = archlab.compile_spec(_small(stem), seed=0).eval()
    inputs = model.example_inputs(batch=2, length=24)
    explanation = torch._dynamo.explain(model)(**inputs)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(**inputs), model(**inputs))


@pytest.mark.slow
@pytest.mark.parametrize("stem", ["gpt-tiny", "vit-tiny-digits"])
def test_torch_export(stem: str) -> None:
    model = archlab.compile_spec(_small(stem), seed=0).eval()
    inputs = model.example_inputs(batch=2, length=24)
    exported = torch.export.export(model, args=(), kwargs=inputs)
    torch.testing.assert_close(exported.module()(**inputs), model(**inputs))
