"""Hugging Face ViT checkpoints convert to archlab specs and weights with equal outputs."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from interop_testing import converted, hf_vision_model, image_output, relative_diff

import archlab
from archlab.interop.families import FAMILIES, ConversionError
from archlab.interop.families.vit import FAMILY

transformers = pytest.importorskip("transformers")

TINY = {
    "image_size": 24,
    "patch_size": 8,
    "hidden_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 3,
    "intermediate_size": 37,
    "num_labels": 5,
}

#: transformers 5 key names -> the names published (transformers 4) checkpoints use.
OLD_NAMES = (
    (r"layers\.(\d+)\.attention\.q_proj\.", r"encoder.layer.\1.attention.attention.query."),
    (r"layers\.(\d+)\.attention\.k_proj\.", r"encoder.layer.\1.attention.attention.key."),
    (r"layers\.(\d+)\.attention\.v_proj\.", r"encoder.layer.\1.attention.attention.value."),
    (r"layers\.(\d+)\.attention\.o_proj\.", r"encoder.layer.\1.attention.output.dense."),
    (r"layers\.(\d+)\.mlp\.fc1\.", r"encoder.layer.\1.intermediate.dense."),
    (r"layers\.(\d+)\.mlp\.fc2\.", r"encoder.layer.\1.output.dense."),
    (r"layers\.(\d+)\.layernorm_", r"encoder.layer.\1.layernorm_"),
)


def old_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` under the key names of checkpoints saved by transformers 4."""
    out = {}
    for key, tensor in state.items():
        for pattern, repl in OLD_NAMES:
            key = re.sub(pattern, repl, key)
        out[key] = tensor
    return out


def hf_model(architecture: str, **overrides: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
    settings = {**TINY, **overrides}
    return hf_vision_model(transformers, "ViTConfig", architecture, "ViTModel", **settings)


def convert(model: torch.nn.Module, config: dict[str, Any], state: Any = None) -> Any:
    return converted(FAMILY, model, config, state)


hf_output = image_output


@pytest.mark.parametrize(
    ("architecture", "overrides"),
    [
        ("ViTForImageClassification", {}),
        ("ViTModel", {}),
        ("ViTForImageClassification", {"hidden_act": "gelu_new", "layer_norm_eps": 1e-6}),
        ("ViTForImageClassification", {"image_size": [24, 16], "num_channels": 1}),
        ("ViTModel", {"image_size": [24, 16], "patch_size": [8, 4]}),
    ],
)
def test_outputs_equal_transformers_in_fp32(architecture: str, overrides: dict[str, Any]) -> None:
    model, config = hf_model(architecture, **overrides)
    ours = convert(model, config)
    size = config["image_size"]
    h, w = (size, size) if isinstance(size, int) else size
    image = torch.randn(3, config["num_channels"], h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = ours(image), hf_output(model, image)
    assert got.shape == want.shape
    assert relative_diff(got, want) <= 1e-5


def test_published_key_names_convert_alike() -> None:
    model, config = hf_model("ViTForImageClassification")
    ours = convert(model, config, old_names(model.state_dict()))
    image = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        assert relative_diff(ours(image), hf_output(model, image)) <= 1e-5


def test_bf16_outputs_close() -> None:
    model, config = hf_model("ViTForImageClassification")
    ours = convert(model, config).to(torch.bfloat16)
    image = torch.randn(4, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = ours(image.bfloat16()).float()
        want = hf_output(model, image)
    assert relative_diff(got, want) <= 5e-2


def test_spec_reads_the_config() -> None:
    _, config = hf_model("ViTForImageClassification")
    compiled = archlab.compile_spec(FAMILY.spec(config, "ViTForImageClassification"))
    assert list(compiled.spec.inputs) == ["image"]
    summary_params = sum(p.numel() for p in compiled.parameters())
    model, _ = hf_model("ViTForImageClassification")
    assert summary_params == sum(p.numel() for p in model.parameters())
    assert FAMILIES["vit"] is FAMILY


def test_unsupported_architecture_lists_the_supported() -> None:
    _, config = hf_model("ViTForImageClassification")
    config["architectures"] = ["ViTForMaskedImageModeling"]
    with pytest.raises(ConversionError, match="ViTForImageClassification, ViTModel"):
        FAMILY.spec(config, "ViTForMaskedImageModeling")


def test_missing_and_extra_tensors_are_named() -> None:
    model, config = hf_model("ViTForImageClassification")
    state = dict(model.state_dict())
    del state["vit.layernorm.bias"]
    with pytest.raises(ConversionError, match=r"lacks tensors: layernorm\.bias"):
        FAMILY.weights(state, config, "ViTForImageClassification")
    state = {**model.state_dict(), "vit.extra.weight": torch.zeros(1)}
    with pytest.raises(ConversionError, match=r"no place for: extra\.weight"):
        FAMILY.weights(state, config, "ViTForImageClassification")


def test_unknown_activation_is_refused() -> None:
    _, config = hf_model("ViTForImageClassification")
    config["hidden_act"] = "mish"
    with pytest.raises(ConversionError, match="hidden_act 'mish'"):
        FAMILY.spec(config, "ViTForImageClassification")
