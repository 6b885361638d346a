"""BERT checkpoints converted to archlab give the outputs of ``transformers`` on the same inputs."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import archlab
from archlab.interop.families import FAMILIES, ConversionError
from archlab.interop.families.bert import FAMILY, spec, weights

transformers = pytest.importorskip("transformers")

TINY = {
    "vocab_size": 97,
    "hidden_size": 36,
    "num_hidden_layers": 2,
    "num_attention_heads": 3,
    "intermediate_size": 53,
    "max_position_embeddings": 24,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
    "num_labels": 3,
}


def hf_model(architecture: str, **overrides: Any) -> Any:
    """A tiny random HF BERT in eval mode, with non-trivial LayerNorms and biases."""
    torch.manual_seed(0)
    config = transformers.BertConfig(**(TINY | overrides))
    model = getattr(transformers, architecture)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def converted(model: Any, architecture: str, dtype: str | None = None) -> Any:
    """The archlab model of ``model``, built from its config dict and state dict."""
    config = model.config.to_dict()
    ours = archlab.compile_spec(spec(config, architecture), dtype=dtype)
    ours.load_state_dict(weights(model.state_dict(), config, architecture), strict=True)
    return ours.eval()


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ids, token types and a right-padded mask (True = real) of three sequences."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, TINY["vocab_size"], (3, 17), generator=g)
    types = torch.zeros_like(ids)
    types[:, 9:] = 1
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 12:] = False
    mask[2, 5:] = False
    ids[~mask] = 0
    types[~mask] = 0
    return ids, types, mask


def relative_diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """Largest absolute difference divided by the largest absolute value of ``theirs``."""
    theirs = theirs.float()
    return float((ours.float() - theirs).abs().max() / theirs.abs().max())


def test_registered_under_model_type() -> None:
    assert FAMILIES["bert"] is FAMILY
    assert FAMILY.architectures == ("BertForSequenceClassification", "BertModel")


def test_bert_model_last_hidden_state_matches() -> None:
    model = hf_model("BertModel")
    ours = converted(model, "BertModel")
    ids, types, mask = batch()
    with torch.no_grad():
        theirs = model(input_ids=ids, token_type_ids=types, attention_mask=mask.long())
        out = ours(ids=ids, token_types=types, ids_mask=mask)
    assert out.shape == theirs.last_hidden_state.shape
    assert relative_diff(out[mask], theirs.last_hidden_state[mask]) <= 1e-5


def test_sequence_classification_logits_match() -> None:
    model = hf_model("BertForSequenceClassification")
    ours = converted(model, "BertForSequenceClassification")
    ids, types, mask = batch()
    with torch.no_grad():
        theirs = model(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).logits
        out = ours(ids=ids, token_types=types, ids_mask=mask)
    assert out.shape == (3, 3)
    assert relative_diff(out, theirs) <= 1e-5


def test_classification_other_sizes_and_activation() -> None:
    model = hf_model(
        "BertForSequenceClassification",
        hidden_size=20,
        num_attention_heads=5,
        num_hidden_layers=3,
        type_vocab_size=3,
        num_labels=7,
        hidden_act="gelu_new",
        layer_norm_eps=1e-7,
    )
    ours = converted(model, "BertForSequenceClassification")
    ids, types, mask = batch()
    types[0, :4] = 2
    with torch.no_grad():
        theirs = model(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).logits
        out = ours(ids=ids, token_types=types, ids_mask=mask)
    assert relative_diff(out, theirs) <= 1e-5


def test_bfloat16_within_tolerance() -> None:
    model = hf_model("BertForSequenceClassification")
    ours = converted(model, "BertForSequenceClassification", dtype="bfloat16")
    ids, types, mask = batch()
    with torch.no_grad():
        theirs = model(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).logits
        out = ours(ids=ids, token_types=types, ids_mask=mask)
    assert out.dtype == torch.bfloat16
    assert relative_diff(out, theirs) <= 5e-2
    bare = hf_model("BertModel")
    with torch.no_grad():
        hidden = bare(input_ids=ids, token_type_ids=types, attention_mask=mask.long())
        ours_hidden = converted(bare, "BertModel", dtype="bfloat16")(
            ids=ids, token_types=types, ids_mask=mask
        )
    assert relative_diff(ours_hidden[mask], hidden.last_hidden_state[mask]) <= 5e-2


def test_spec_is_post_norm_with_token_types_and_pooler() -> None:
    config = transformers.BertConfig(**TINY).to_dict()
    doc = spec(config, "BertForSequenceClassification")
    assert set(doc["inputs"]) == {"ids", "token_types"}
    assert doc["inputs"]["ids"].get("pad_id") is None  # padding comes from ids_mask
    assert doc["inputs"]["token_types"]["vocab_size"] == 2
    assert doc["nodes"]["encoder"]["block"]["norm"]["placement"] == "post"
    assert doc["nodes"]["head"]["pre_logits"] == {"activation": "tanh"}
    assert doc["nodes"]["head"]["pool"] == "first"
    bare = spec(config, "BertModel")
    assert bare["outputs"] == "encoder" and "head" not in bare["nodes"]
    # the parameter count is HF's (BertModel without its unused pooler)
    ours = archlab.compile_spec(doc)
    hf = hf_model("BertForSequenceClassification")
    assert ours.summary().params == sum(p.numel() for p in hf.parameters())


def test_unsupported_architecture_lists_the_supported() -> None:
    config = TINY | {"architectures": ["BertForMaskedLM"]}
    with pytest.raises(ConversionError, match="BertForSequenceClassification, BertModel"):
        from archlab.interop.families import architecture_of

        architecture_of(config, FAMILY)
    with pytest.raises(ConversionError, match="supported: BertForSequenceClassification"):
        spec(TINY, "BertForMaskedLM")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("position_embedding_type", "relative_key", "only absolute positions"),
        ("is_decoder", True, "only encoders"),
        ("hidden_act", "mish", "supported: gelu"),
    ],
)
def test_unsupported_config_is_refused(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConversionError, match=message):
        spec(TINY | {key: value}, "BertModel")


def test_bad_checkpoints_are_named() -> None:
    model = hf_model("BertForSequenceClassification")
    config = model.config.to_dict()
    state = dict(model.state_dict())
    missing = {k: v for k, v in state.items() if k != "bert.pooler.dense.weight"}
    with pytest.raises(ConversionError, match=r"lacks pooler\.dense\.weight"):
        weights(missing, config, "BertForSequenceClassification")
    wrong = state | {"classifier.weight": torch.zeros(4, 36)}
    with pytest.raises(ConversionError, match=r"classifier\.weight has shape \(4, 36\)"):
        weights(wrong, config, "BertForSequenceClassification")
    deeper = state | {"bert.encoder.layer.2.output.dense.bias": torch.zeros(36)}
    with pytest.raises(ConversionError, match="layers the config does not"):
        weights(deeper, config, "BertForSequenceClassification")


def test_old_layernorm_names_and_bare_keys_are_read() -> None:
    model = hf_model("BertModel")
    config = model.config.to_dict()
    state = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): v
        for k, v in model.state_dict().items()
    }
    out = weights(state, config, "BertModel")
    assert torch.equal(out["emb_norm.weight"], model.embeddings.LayerNorm.weight)
    prefixed = weights({f"bert.{k}": v for k, v in state.items()}, config, "BertModel")
    assert prefixed.keys() == out.keys()
