"""Hugging Face DeiT checkpoints, the distilled one included, convert with equal outputs."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from interop_testing import converted, hf_vision_model, image_output, relative_diff

import archlab
from archlab.interop.families import FAMILIES, ConversionError
from archlab.interop.families.deit import ARCHITECTURES, FAMILY

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


def hf_model(architecture: str, **overrides: Any) -> tuple[torch.nn.Module, dict[str, Any]]:
    settings = {**TINY, **overrides}
    return hf_vision_model(transformers, "DeiTConfig", architecture, "DeiTModel", **settings)


def convert(model: torch.nn.Module, config: dict[str, Any], state: Any = None) -> Any:
    return converted(FAMILY, model, config, state)


hf_output = image_output


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_outputs_equal_transformers_in_fp32(architecture: str) -> None:
    model, config = hf_model(architecture)
    ours = convert(model, config)
    image = torch.randn(3, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = ours(image), hf_output(model, image)
    assert got.shape == want.shape
    assert relative_diff(got, want) <= 1e-5


def test_distilled_output_is_the_mean_of_both_heads() -> None:
    model, config = hf_model("DeiTForImageClassificationWithTeacher")
    doc = FAMILY.spec(config, "DeiTForImageClassificationWithTeacher")
    assert doc["nodes"]["logits"] == {"op": "average", "inputs": ["head", "head_dist"]}
    assert doc["nodes"]["head_dist"]["pool"] == "distill"
    ours = convert(model, config)
    image = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        out = model(pixel_values=image)
        norm = ours.norm(ours.encoder(ours.pos(ours.cls(ours.patches(image), None)[0]), None))
        assert relative_diff(ours.head_dist(norm), out.distillation_logits) <= 1e-5
        assert relative_diff(ours.head(norm), out.cls_logits) <= 1e-5


def test_without_labels_the_heads_are_identities() -> None:
    model, config = hf_model("DeiTForImageClassificationWithTeacher", num_labels=0)
    config.pop("id2label", None)
    config["num_labels"] = 0
    ours = convert(model, config)
    image = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        assert relative_diff(ours(image), hf_output(model, image)) <= 1e-5


def test_published_key_names_convert_alike() -> None:
    model, config = hf_model("DeiTForImageClassificationWithTeacher")
    renames = (
        (r"layers\.(\d+)\.attention\.q_proj\.", r"encoder.layer.\1.attention.attention.query."),
        (r"layers\.(\d+)\.attention\.k_proj\.", r"encoder.layer.\1.attention.attention.key."),
        (r"layers\.(\d+)\.attention\.v_proj\.", r"encoder.layer.\1.attention.attention.value."),
        (r"layers\.(\d+)\.attention\.o_proj\.", r"encoder.layer.\1.attention.output.dense."),
        (r"layers\.(\d+)\.mlp\.fc1\.", r"encoder.layer.\1.intermediate.dense."),
        (r"layers\.(\d+)\.mlp\.fc2\.", r"encoder.layer.\1.output.dense."),
        (r"layers\.(\d+)\.layernorm_", r"encoder.layer.\1.layernorm_"),
    )
    state = {}
    for key, tensor in model.state_dict().items():
        for pattern, repl in renames:
            key = re.sub(pattern, repl, key)
        state[key] = tensor
    ours = convert(model, config, state)
    image = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        assert relative_diff(ours(image), hf_output(model, image)) <= 1e-5


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_bf16_outputs_close(architecture: str) -> None:
    model, config = hf_model(architecture)
    ours = convert(model, config).to(torch.bfloat16)
    image = torch.randn(4, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = ours(image.bfloat16()).float()
        want = hf_output(model, image)
    assert relative_diff(got, want) <= 5e-2


def test_parameter_count_and_registration() -> None:
    model, config = hf_model("DeiTForImageClassificationWithTeacher")
    compiled = archlab.compile_spec(FAMILY.spec(config, "DeiTForImageClassificationWithTeacher"))
    assert compiled.summary().params == sum(p.numel() for p in model.parameters())
    assert FAMILIES["deit"] is FAMILY


def test_unsupported_architecture_lists_the_supported() -> None:
    _, config = hf_model("DeiTForImageClassification")
    supported = re.escape(", ".join(ARCHITECTURES))
    with pytest.raises(ConversionError, match=f"supported: {supported}$"):
        FAMILY.spec(config, "DeiTForMaskedImageModeling")
    with pytest.raises(ConversionError, match="'DeiTForMaskedImageModeling'"):
        FAMILY.weights({}, config, "DeiTForMaskedImageModeling")


def test_a_plain_classifier_checkpoint_is_not_read_as_distilled() -> None:
    model, config = hf_model("DeiTForImageClassification")
    with pytest.raises(ConversionError, match=r"lacks tensors: cls_classifier\.weight"):
        FAMILY.weights(model.state_dict(), config, "DeiTForImageClassificationWithTeacher")
