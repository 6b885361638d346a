"""T5 checkpoints made with ``transformers`` (tiny odd sizes, saved with ``save_pretrained``)
convert to archlab models whose logits equal HF's, padded source batches included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

import archlab  # noqa: E402
from archlab.interop.families import FAMILIES, ConversionError  # noqa: E402
from archlab.interop.families.t5 import FAMILY, spec, weights  # noqa: E402

ARCH = "T5ForConditionalGeneration"
VOCAB = 61
#: odd sizes: d_model 40 = 5 heads of 8, MLP 72, 2 encoder and 3 decoder layers, 8 buckets
TINY = {
    "vocab_size": VOCAB,
    "d_model": 40,
    "d_kv": 8,
    "d_ff": 72,
    "num_layers": 2,
    "num_decoder_layers": 3,
    "num_heads": 5,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 20,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
}


def hf_model(tmp_path: Path, **settings: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """A random HF T5 in eval mode, its saved config.json and its saved tensors."""
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(**TINY, **settings))
    with torch.no_grad():  # T5's init leaves layer norms at 1: make them matter
        for name, param in model.named_parameters():
            if "layer_norm" in name:
                param.uniform_(0.5, 1.5)
    model.eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    state = safetensors_torch.load_file(str(tmp_path / "model.safetensors"))
    return model, config, state


def untied_hf_model() -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """An HF T5 with its own lm_head and no output rescale, as T5 v1.1 checkpoints are (config
    ``tie_word_embeddings: false``, an ``lm_head.weight`` in the file)."""
    torch.manual_seed(1)
    model = transformers.T5ForConditionalGeneration(
        transformers.T5Config(**TINY, feed_forward_proj="gated-gelu")
    )
    model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 40))
    model.config.scale_decoder_outputs = False
    model.eval()
    config = {**model.config.to_dict(), "tie_word_embeddings": False}
    del config["scale_decoder_outputs"]
    state = {k: v for k, v in model.state_dict().items() if "embed_tokens" not in k}
    return model, config, state


def convert(config: dict[str, Any], state: dict[str, Any]) -> archlab.CompiledModel:
    model = archlab.compile_spec(spec(config, ARCH))
    model.load_state_dict(weights(state, config, ARCH), strict=True)
    return model.eval()


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source ids with padding (mask True = real token) and decoder ids starting with the pad id
    (T5's decoder start), seeded; a real source token is the pad id too."""
    g = torch.Generator().manual_seed(2)
    src = torch.randint(0, VOCAB, (3, 11), generator=g)
    src[0, 4] = 0
    src_mask = torch.ones(3, 11, dtype=torch.bool)
    src_mask[1, 7:] = False
    src_mask[2, 3:] = False
    src = src.masked_fill(~src_mask, 0)
    tgt = torch.randint(0, VOCAB, (3, 9), generator=g)
    tgt[:, 0] = 0
    return src, src_mask, tgt


def difference(hf: Any, ours: archlab.CompiledModel, dtype: torch.dtype) -> float:
    """max |archlab - HF| over HF's largest logit; archlab in ``dtype``, HF in float32."""
    src, src_mask, tgt = batch()
    with torch.no_grad():
        expected = hf(input_ids=src, attention_mask=src_mask.long(), decoder_input_ids=tgt).logits
        got = ours.to(dtype)(src, tgt, src_mask=src_mask).float()
    assert got.shape == expected.shape
    return float((got - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize(
    "settings",
    [
        {"feed_forward_proj": "relu"},
        {"feed_forward_proj": "gated-gelu"},
        {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False},
    ],
    ids=["relu-tied", "gated-gelu-tied", "gated-gelu-unscaled"],
)
def test_logits_equal_hf_in_float32(tmp_path: Path, settings: dict[str, Any]) -> None:
    hf, config, state = hf_model(tmp_path, **settings)
    assert difference(hf, convert(config, state), torch.float32) <= 1e-5


def test_untied_head_equals_hf() -> None:
    hf, config, state = untied_hf_model()
    ours = convert(config, state)
    assert "scale" not in ours.spec.nodes["lm_head"].model_dump(exclude_none=True)
    assert difference(hf, ours, torch.float32) <= 1e-5


def test_bfloat16_is_close(tmp_path: Path) -> None:
    hf, config, state = hf_model(tmp_path, feed_forward_proj="gated-gelu")
    assert difference(hf, convert(config, state), torch.bfloat16) <= 5e-2


def test_spec_is_t5_shaped(tmp_path: Path) -> None:
    hf, config, _ = hf_model(tmp_path, feed_forward_proj="gated-gelu")
    doc = spec(config, ARCH)
    assert FAMILIES["t5"] is FAMILY
    assert list(doc["inputs"]) == ["src", "tgt"]
    attention = doc["nodes"]["encoder"]["block"]["attention"]
    assert attention["scale"] == 1.0 and attention["position"]["buckets"] == 8
    assert doc["nodes"]["decoder"]["depth"] == 3
    assert doc["nodes"]["encoder"]["block"]["mlp"]["activation"] == "geglu_tanh"
    assert doc["nodes"]["lm_head"]["scale"] == pytest.approx(40**-0.5)
    hf_params = sum(p.numel() for p in hf.parameters())  # tied tensors counted once
    assert archlab.compile_spec(doc).summary().params == hf_params


def test_unsupported_architecture_is_refused(tmp_path: Path) -> None:
    _, config, _ = hf_model(tmp_path)
    with pytest.raises(ConversionError, match=r"T5EncoderModel.*not supported.*T5ForConditional"):
        spec(config, "T5EncoderModel")


def test_unsupported_activation_is_refused(tmp_path: Path) -> None:
    _, config, _ = hf_model(tmp_path)
    with pytest.raises(ConversionError, match="feed_forward_proj 'gated-tanh' is not supported"):
        spec({**config, "feed_forward_proj": "gated-tanh"}, ARCH)


def test_missing_and_extra_tensors_are_named(tmp_path: Path) -> None:
    _, config, state = hf_model(tmp_path)
    missing = {k: v for k, v in state.items() if "decoder.block.2." not in k}
    with pytest.raises(ConversionError, match=r"no tensor 'decoder\.block\.2\.layer\.0"):
        weights(missing, config, ARCH)
    with pytest.raises(ConversionError, match=r"does not account for: decoder\.block\.2\."):
        weights(state, {**config, "num_decoder_layers": 2}, ARCH)
