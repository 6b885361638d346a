"""timm ViT/DeiT state dicts (timm's published key names) convert to specs and weights.

timm is not installed here: the state dicts are built from timm's key names and shapes, and the
outputs are compared with a reference forward written from timm's ``VisionTransformer`` (and
``VisionTransformerDistilled``, whose two heads are averaged at inference).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import archlab
from archlab.interop.families import ConversionError
from archlab.interop.families.timm_vit import FAMILY, architecture_for, parse_name, resolve

TINY_ARGS = {"embed_dim": 48, "depth": 2, "num_heads": 3, "patch_size": 8, "img_size": 24}


def timm_state(
    *,
    dim: int = 48,
    depth: int = 2,
    patch: int = 8,
    image: int = 24,
    hidden: int = 37,
    classes: int = 5,
    distilled: bool = False,
    no_embed_class: bool = False,
    layer_scale: bool = False,
    channels: int = 3,
) -> dict[str, Tensor]:
    """Random tensors under timm's key names and shapes."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g) * 0.2

    prefix = 1 + int(distilled)
    n = (image // patch) ** 2 + (0 if no_embed_class else prefix)
    state = {
        "cls_token": rand(1, 1, dim),
        "pos_embed": rand(1, n, dim),
        "patch_embed.proj.weight": rand(dim, channels, patch, patch),
        "patch_embed.proj.bias": rand(dim),
    }
    if distilled:
        state["dist_token"] = rand(1, 1, dim)
    for i in range(depth):
        b = f"blocks.{i}."
        shapes = {
            "norm1": (dim,),
            "attn.qkv": (3 * dim, dim),
            "attn.proj": (dim, dim),
            "norm2": (dim,),
            "mlp.fc1": (hidden, dim),
            "mlp.fc2": (dim, hidden),
        }
        for part, shape in shapes.items():
            state[f"{b}{part}.weight"] = rand(*shape) + (1.0 if "norm" in part else 0.0)
            state[f"{b}{part}.bias"] = rand(shape[0])
        if layer_scale:
            state[f"{b}ls1.gamma"] = rand(dim)
            state[f"{b}ls2.gamma"] = rand(dim)
    state["norm.weight"], state["norm.bias"] = rand(dim) + 1.0, rand(dim)
    for head in ["head", "head_dist"][: 1 + int(distilled)] if classes else []:
        state[f"{head}.weight"], state[f"{head}.bias"] = rand(classes, dim), rand(classes)
    return state


def timm_forward(state: dict[str, Tensor], image: Tensor, heads: int) -> Tensor:
    """timm's ViT forward (eval mode), written from its source, on a state dict."""
    s = state
    proj = s["patch_embed.proj.weight"]
    x = F.conv2d(image, proj, s["patch_embed.proj.bias"], stride=proj.shape[-1])
    x = x.flatten(2).transpose(1, 2)
    tokens = [s["cls_token"]] + ([s["dist_token"]] if "dist_token" in s else [])
    tokens = [t.expand(x.shape[0], -1, -1) for t in tokens]
    if s["pos_embed"].shape[1] == x.shape[1]:  # no_embed_class
        x = torch.cat([*tokens, x + s["pos_embed"]], dim=1)
    else:
        x = torch.cat([*tokens, x], dim=1) + s["pos_embed"]
    B, N, C = x.shape
    depth = len({k.split(".")[1] for k in s if k.startswith("blocks.")})
    for i in range(depth):
        b = f"blocks.{i}."

        def p(name: str, b: str = b) -> tuple[Tensor, Tensor]:
            return s[f"{b}{name}.weight"], s[f"{b}{name}.bias"]

        ls1, ls2 = s.get(f"{b}ls1.gamma", 1.0), s.get(f"{b}ls2.gamma", 1.0)
        h = F.layer_norm(x, (C,), *p("norm1"), eps=1e-6)
        qkv = F.linear(h, *p("attn.qkv")).reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * (C // heads) ** -0.5) @ k.transpose(-2, -1)
        h = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, N, C)
        x = x + ls1 * F.linear(h, *p("attn.proj"))
        h = F.layer_norm(x, (C,), *p("norm2"), eps=1e-6)
        x = x + ls2 * F.linear(F.gelu(F.linear(h, *p("mlp.fc1"))), *p("mlp.fc2"))
    x = F.layer_norm(x, (C,), s["norm.weight"], s["norm.bias"], eps=1e-6)
    if "head.weight" not in s:
        return x[:, 0] if "dist_token" not in s else (x[:, 0] + x[:, 1]) / 2
    logits = F.linear(x[:, 0], s["head.weight"], s["head.bias"])
    if "dist_token" in s:
        logits = (logits + F.linear(x[:, 1], s["head_dist.weight"], s["head_dist.bias"])) / 2
    return logits


def convert(name: str, state: dict[str, Tensor], model_args: dict[str, Any] | None) -> Any:
    config = resolve(name, state, model_args)
    arch = architecture_for(config)
    model = archlab.compile_spec(FAMILY.spec(config, arch))
    model.load_state_dict(FAMILY.weights(state, config, arch), strict=True)
    return model.eval()


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("vit_small_patch16_224.augreg_in21k_ft_in1k", {}),
        ("deit_small_patch16_224", {}),
        ("deit_small_distilled_patch16_224", {"distilled": True}),
        ("deit3_small_patch16_224", {"no_embed_class": True, "layer_scale": True}),
        ("vit_small_patch16_224", {"classes": 0}),
        ("deit_small_distilled_patch16_224", {"distilled": True, "classes": 0}),
    ],
)
def test_outputs_equal_timm_reference(name: str, options: dict[str, Any]) -> None:
    state = timm_state(**options)
    model = convert(name, state, TINY_ARGS)
    image = torch.randn(3, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = model(image), timm_forward(state, image, heads=3)
    assert got.shape == want.shape
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5


def test_bf16_close() -> None:
    state = timm_state(distilled=True)
    model = convert("deit_tiny_distilled_patch16_224", state, TINY_ARGS).to(torch.bfloat16)
    image = torch.randn(4, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got, want = model(image.bfloat16()).float(), timm_forward(state, image, heads=3)
    assert float((got - want).abs().max() / want.abs().max()) <= 5e-2


def test_name_gives_heads_and_shapes_give_the_rest() -> None:
    state = timm_state(dim=384, depth=12, patch=16, image=224, hidden=1536, classes=1000)
    config = resolve("vit_small_patch16_224", state)
    assert (config["num_heads"], config["sources"]["num_heads"]) == (6, "name")
    assert (config["depth"], config["sources"]["depth"]) == (12, "shapes")
    assert (config["num_classes"], config["img_size"]) == (1000, 224)
    spec = FAMILY.spec(config, "VisionTransformer")
    # the zoo's deit-small-16 is timm's vit_small_patch16_224 (22,050,664 parameters)
    assert archlab.spec_hash(spec) == archlab.spec_hash(_without_drop_path("deit-small-16.json"))


def _without_drop_path(file: str) -> Any:
    import json
    from pathlib import Path

    doc = json.loads((Path(__file__).parents[2] / "specs" / file).read_text())
    del doc["nodes"]["encoder"]["block"]["drop_path"]
    return doc


def test_name_contradicting_the_weights_is_refused() -> None:
    with pytest.raises(ConversionError, match=r"has depth 12 by its name, but the weights have 2"):
        resolve("vit_small_patch16_224", timm_state(dim=384, patch=16, image=224))


@pytest.mark.parametrize("name", ["vit_gigantic_patch16_224", "resnet50", "vit_small_patch16"])
def test_unknown_name_lists_the_supported(name: str) -> None:
    with pytest.raises(ConversionError, match=re.escape(f"timm model {name!r} is not a supported")):
        parse_name(name)


def test_unknown_tensors_are_named() -> None:
    state = timm_state() | {"reg_token": torch.zeros(1, 4, 48)}
    with pytest.raises(ConversionError, match="no place for: reg_token"):
        convert("vit_small_patch16_224", state, TINY_ARGS)


def test_distilled_class_must_match_the_name() -> None:
    config = resolve("deit_small_patch16_224", timm_state(), TINY_ARGS)
    with pytest.raises(ConversionError, match="is not distilled"):
        FAMILY.spec(config, "VisionTransformerDistilled")
    with pytest.raises(
        ConversionError, match="supported: VisionTransformer, VisionTransformerDist"
    ):
        FAMILY.spec(config, "Eva")
