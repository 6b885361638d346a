"""The Llama family: tiny ``transformers`` Llama models, saved with ``save_pretrained`` and
converted, give the logits (or last hidden state) ``transformers`` gives, padded batches included;
configs archlab cannot reproduce exactly are refused with ``ConversionError``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import archlab
from archlab.interop.families import FAMILIES, ConversionError, architecture_of, llama

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

ROOT = Path(__file__).parents[2]
VOCAB = 61

# Odd sizes: GQA with head_dim != hidden / heads, plain multi-head with biases and a tied head,
# multi-query; three rotary bases.
CASES: dict[str, dict[str, Any]] = {
    "gqa-headdim8-untied": dict(
        hidden_size=36, intermediate_size=52, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, head_dim=8, rope_theta=10000.0, tie_word_embeddings=False,
    ),
    "mha-tied-biases": dict(
        hidden_size=40, intermediate_size=26, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=4, rope_theta=500.0, tie_word_embeddings=True,
        attention_bias=True, mlp_bias=True,
    ),
    "mqa-theta1e6": dict(
        hidden_size=24, intermediate_size=38, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=1, rope_theta=1e6, rms_norm_eps=1e-5, tie_word_embeddings=False,
    ),
}  # fmt: skip


def _config(**overrides: Any) -> Any:
    fields = dict(vocab_size=VOCAB, max_position_embeddings=32, attn_implementation="eager")
    return transformers.LlamaConfig(**{**fields, **overrides})


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random (HF initialises biases to zero and norms to one, which would hide
    a misplaced bias or norm weight)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if "norm" in name else 0.2 * noise)


def _saved(tmp_path: Path, model: Any) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``model`` through ``save_pretrained``: its config.json and its safetensors tensors."""
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    return config, safetensors_torch.load_file(tmp_path / "model.safetensors")


def _convert(
    config: dict[str, Any], state: dict[str, Tensor], dtype: torch.dtype = torch.float32
) -> archlab.CompiledModel:
    architecture = architecture_of(config, llama.FAMILY)
    model = archlab.compile_spec(llama.spec(config, architecture), dtype=dtype)
    converted = llama.weights(state, config, architecture)
    model.load_state_dict({k: v.to(dtype) for k, v in converted.items()}, strict=True)
    return model.eval()


def _batch(side: str, seed: int = 1) -> tuple[Tensor, Tensor]:
    """Three sequences of 9, 6 and 3 real tokens, padded on ``side``; ``mask`` True = real."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (3, 9), generator=gen)
    real = torch.arange(9)[None, :] < torch.tensor([9, 6, 3])[:, None]
    mask = real if side == "right" else real.flip(1)
    return ids.masked_fill(~mask, 0), mask


def _relative_diff(ours: Tensor, theirs: Tensor, mask: Tensor) -> float:
    """Max abs difference over real positions, relative to the source's output scale."""
    ours, theirs = ours.float()[mask], theirs.float()[mask]
    return float((ours - theirs).abs().max() / theirs.abs().max())


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("case", list(CASES))
def test_causal_lm_logits_equal_transformers(tmp_path: Path, case: str, side: str) -> None:
    source = transformers.LlamaForCausalLM(_config(**CASES[case]))
    _randomize(source, seed=len(case))
    source.eval()
    config, state = _saved(tmp_path, source)
    ours = _convert(config, state)
    ids, mask = _batch(side)
    with torch.no_grad():
        theirs = source(input_ids=ids, attention_mask=mask.long()).logits
        logits = ours(ids=ids, ids_mask=mask)
    assert logits.shape == theirs.shape == (3, 9, VOCAB)
    assert _relative_diff(logits, theirs, mask) <= 1e-5


def test_long_sequence_rotary_angles_agree(tmp_path: Path) -> None:
    """Far positions too: archlab's rotary tables (float64 angles) against transformers' float32
    ones stay within the tolerance over 512 positions."""
    config = _config(**{**CASES["gqa-headdim8-untied"], "max_position_embeddings": 512})
    source = transformers.LlamaForCausalLM(config)
    _randomize(source, seed=7)
    source.eval()
    ours = _convert(*_saved(tmp_path, source))
    ids = torch.randint(0, VOCAB, (1, 512), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        theirs = source(input_ids=ids).logits
        logits = ours(ids=ids)
    assert _relative_diff(logits, theirs, torch.ones(1, 512, dtype=torch.bool)) <= 1e-5


def test_tied_checkpoint_without_lm_head_tensor(tmp_path: Path) -> None:
    source = transformers.LlamaForCausalLM(_config(**CASES["mha-tied-biases"]))
    config, state = _saved(tmp_path, source)
    assert "lm_head.weight" not in state  # save_pretrained drops the tied copy
    spec = llama.spec(config, "LlamaForCausalLM")
    assert spec["nodes"]["lm_head"] == {"op": "lm_head", "input": "norm", "tie": "tok"}
    ours = _convert(config, state)
    assert ours.lm_head.weight.data_ptr() == ours.tok.weight.data_ptr()


def test_llama_model_gives_the_final_norm_hidden_state(tmp_path: Path) -> None:
    source = transformers.LlamaModel(_config(**CASES["gqa-headdim8-untied"]))
    _randomize(source, seed=3)
    source.eval()
    config, state = _saved(tmp_path, source)
    assert config["architectures"] == ["LlamaModel"]
    assert not any(name.startswith("model.") for name in state)
    ours = _convert(config, state)
    ids, mask = _batch("right")
    with torch.no_grad():
        theirs = source(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        hidden = ours(ids=ids, ids_mask=mask)
    assert hidden.shape == theirs.shape == (3, 9, 36)
    assert _relative_diff(hidden, theirs, mask) <= 1e-5


def test_bf16_logits_close_to_transformers(tmp_path: Path) -> None:
    source = transformers.LlamaForCausalLM(_config(**CASES["gqa-headdim8-untied"]))
    _randomize(source, seed=5)
    config, state = _saved(tmp_path, source)
    ours = _convert(config, state, dtype=torch.bfloat16)
    source.eval()
    ids, mask = _batch("right")
    with torch.no_grad():
        exact = source(input_ids=ids, attention_mask=mask.long()).logits
        theirs = source.to(torch.bfloat16)(input_ids=ids, attention_mask=mask.long()).logits
        logits = ours(ids=ids, ids_mask=mask)
    assert logits.dtype == torch.bfloat16
    assert _relative_diff(logits, theirs, mask) <= 3e-2
    # and no further from the fp32 logits than transformers' own bf16 run, with some slack
    assert _relative_diff(logits, exact, mask) <= 2 * _relative_diff(theirs, exact, mask) + 1e-3


def test_registered_under_its_model_type() -> None:
    assert FAMILIES["llama"] is llama.FAMILY
    assert llama.FAMILY.architectures == ("LlamaForCausalLM", "LlamaModel")


def test_spec_matches_the_zoo_llama_style() -> None:
    """A config with llama-style's sizes gives a spec of the same hash as the hand-written one."""
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
        "hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8,
        "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 64,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    }  # fmt: skip
    spec = llama.spec(config, "LlamaForCausalLM")
    assert archlab.spec_hash(spec) == archlab.spec_hash(str(ROOT / "specs/llama-style.json"))


@pytest.mark.parametrize(
    ("rope", "theta"),
    [
        ({"rope_parameters": {"rope_type": "default", "rope_theta": 2.5e5}}, 2.5e5),
        ({"rope_theta": 5e5, "rope_scaling": None}, 5e5),  # transformers 4.x config.json
        ({"rope_theta": 5e5, "rope_scaling": {"rope_type": "default"}}, 5e5),
        ({}, 10000.0),
    ],
)
def test_rope_theta_from_either_config_layout(rope: dict[str, Any], theta: float) -> None:
    spec = llama.spec({"hidden_size": 64, "num_attention_heads": 4, **rope}, "LlamaModel")
    position = spec["nodes"]["decoder"]["block"]["attention"]["position"]
    assert position == {"kind": "rotary", "base": theta}


@pytest.mark.parametrize(
    ("rope", "kind"),
    [
        ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "linear"),
        ({"rope_theta": 5e5, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "dynamic"),
        ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}}, "llama3"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "yarn"),
    ],
)
def test_rope_scaling_is_refused(rope: dict[str, Any], kind: str) -> None:
    config = {"hidden_size": 64, "num_attention_heads": 4, **rope}
    with pytest.raises(ConversionError, match=rf"scaling '{kind}'.*supported: default"):
        llama.spec(config, "LlamaForCausalLM")


def test_unsupported_architecture_names_the_supported_ones() -> None:
    config = {"architectures": ["LlamaForSequenceClassification"], "model_type": "llama"}
    pattern = r"'LlamaForSequenceClassification'.*supported: LlamaForCausalLM, LlamaModel"
    with pytest.raises(ConversionError, match=pattern):
        architecture_of(config, llama.FAMILY)
    with pytest.raises(ConversionError, match=pattern):
        llama.spec(config, "LlamaForSequenceClassification")


def test_other_activation_is_refused() -> None:
    with pytest.raises(ConversionError, match=r"hidden_act 'gelu'.*supported: silu"):
        llama.spec({"hidden_act": "gelu"}, "LlamaForCausalLM")


def test_odd_head_dim_is_refused() -> None:
    with pytest.raises(ConversionError, match=r"head_dim \(9\) must be even"):
        llama.spec({"hidden_size": 36, "num_attention_heads": 4}, "LlamaForCausalLM")


def _small_checkpoint() -> tuple[dict[str, Any], dict[str, Tensor]]:
    source = transformers.LlamaForCausalLM(_config(**CASES["gqa-headdim8-untied"]))
    return source.config.to_dict(), dict(source.state_dict())


def test_wrong_shape_is_named() -> None:
    config, state = _small_checkpoint()
    state["model.layers.1.self_attn.k_proj.weight"] = torch.zeros(48, 36)
    pattern = r"'layers.1.self_attn.k_proj.weight' has shape \(48, 36\).*implies \(16, 36\)"
    with pytest.raises(ConversionError, match=pattern):
        llama.weights(state, config, "LlamaForCausalLM")


def test_missing_tensor_is_named() -> None:
    config, state = _small_checkpoint()
    del state["lm_head.weight"]
    with pytest.raises(ConversionError, match=r"no tensor 'lm_head.weight'"):
        llama.weights(state, config, "LlamaForCausalLM")


def test_tensors_the_config_does_not_account_for_are_refused() -> None:
    config, state = _small_checkpoint()
    config["num_hidden_layers"] = 1  # the weights hold two layers
    with pytest.raises(ConversionError, match=r"does not account for: layers\.1\."):
        llama.weights(state, config, "LlamaForCausalLM")
