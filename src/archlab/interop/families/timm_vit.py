"""timm ViT and DeiT checkpoints (``vit_*``, ``deit_*``, ``deit_*_distilled``, ``deit3_*``).

timm's checkpoints carry no config of depth and width: :func:`resolve` reads them from the model
name (``vit_small_patch16_224``: width 384, 12 layers, 6 heads, 16-pixel patches, 224-pixel
images) and from the tensors' shapes, checks the two against each other, and records in
``sources`` where each setting came from. Heads come from the name only (no shape carries
them). The resolved config then goes to :func:`spec` and :func:`weights`, which have the
:class:`~archlab.interop.families.Family` signatures; ``architecture`` is timm's class,
``VisionTransformer`` or ``VisionTransformerDistilled`` (DeiT's distillation token and
``head_dist``, averaged with ``head`` as timm does at inference).

Supported: a CLS token, learned positions covering it (or, ``no_embed_class`` as in DeiT III,
only the patches), pre-norm blocks with fused ``qkv`` (timm's layout is archlab's: queries, keys,
values, each head-major), optional layer scale (``ls1``/``ls2``), the final ``norm`` and a
token-pooled ``head``. Anything else in the state dict (register tokens, ``fc_norm``, a
pre-logits layer, ...) is refused by name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from archlab.interop.families import Config, ConversionError, Family, StateDict

#: Width, depth and heads of timm's model sizes, by family prefix.
SIZES: dict[str, dict[str, tuple[int, int, int]]] = {
    "vit": {
        "tiny": (192, 12, 3),
        "small": (384, 12, 6),
        "base": (768, 12, 12),
        "large": (1024, 24, 16),
        "huge": (1280, 32, 16),
    },
    "deit": {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)},
    "deit3": {
        "small": (384, 12, 6),
        "medium": (512, 12, 8),
        "base": (768, 12, 12),
        "large": (1024, 24, 16),
        "huge": (1280, 32, 16),
    },
}

_NAME = re.compile(
    r"^(?P<family>vit|deit3|deit)_(?P<size>[a-z]+)(?P<distilled>_distilled)?"
    r"_patch(?P<patch>\d+)_(?P<image>\d+)(?P<rest>(_[a-z0-9]+)*)$"
)

ARCHITECTURES = ("VisionTransformer", "VisionTransformerDistilled")


def parse_name(name: str) -> dict[str, Any]:
    """The settings a timm model name states (a pretrained tag after ``.`` is ignored)."""
    base = name.split(".", 1)[0]
    match = _NAME.match(base)
    if match is None or match["size"] not in SIZES[match["family"]]:
        known = ", ".join(f"{f}_{s}" for f, sizes in SIZES.items() for s in sizes)
        raise ConversionError(
            f"timm model {name!r} is not a supported ViT/DeiT name; supported: {known} "
            "(as <family>_<size>[_distilled]_patch<P>_<image size>)"
        )
    dim, depth, heads = SIZES[match["family"]][match["size"]]
    deit3 = match["family"] == "deit3"
    return {
        "embed_dim": dim,
        "depth": depth,
        "num_heads": heads,
        "patch_size": int(match["patch"]),
        "img_size": int(match["image"]),
        "distilled": match["distilled"] is not None,
        "no_embed_class": deit3,
        "layer_scale": deit3,
    }


def name_parts(name: str) -> dict[str, Any] | None:
    """What a timm model name says of the model: family, size, distilled, patch and image size
    (its pretrained tag after ``.`` and trailing words such as ``_in21k`` aside), or None for a
    name of another pattern."""
    match = _NAME.match(name.split(".", 1)[0])
    if match is None:
        return None
    return {
        "family": match["family"],
        "size": match["size"],
        "distilled": match["distilled"] is not None,
        "patch": int(match["patch"]),
        "image": int(match["image"]),
    }


def _blocks(state: StateDict) -> int:
    found = {int(m[1]) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def resolve(
    name: str, state: StateDict, model_args: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The full config of timm model ``name`` with weights ``state``.

    The name gives every setting; ``model_args`` (from a timm hub folder's ``config.json``) replace
    some; the shapes then decide depth, width, patch size, channels, MLP width, image size and
    classes, and must agree with what the name said. ``sources`` says, per setting, ``"name"``,
    ``"model_args"`` or ``"shapes"``.
    """
    config = parse_name(name)
    sources = dict.fromkeys(config, "name")
    for key, value in (model_args or {}).items():
        if key in ("embed_dim", "depth", "num_heads", "patch_size", "img_size", "no_embed_class"):
            if isinstance(value, list | tuple) and len(set(value)) == 1:
                value = value[0]  # a square img_size or patch_size written as a pair
            config[key], sources[key] = value, "model_args"
    proj = state.get("patch_embed.proj.weight")
    pos = state.get("pos_embed")
    if proj is None or pos is None or "cls_token" not in state:
        raise ConversionError(
            "not a timm ViT state dict: patch_embed.proj.weight, cls_token and pos_embed are needed"
        )
    prefix = 0 if config["no_embed_class"] else 1 + int(config["distilled"])
    patches = int(pos.shape[1]) - prefix
    side = math.isqrt(max(patches, 0))
    if side * side != patches:
        raise ConversionError(f"pos_embed's {pos.shape[1]} rows are no square patch grid")
    shaped = {
        "embed_dim": int(proj.shape[0]),
        "depth": _blocks(state),
        "patch_size": int(proj.shape[2]),
        "img_size": side * int(proj.shape[2]),
    }
    for key, value in shaped.items():
        if key in config and config[key] != value:
            raise ConversionError(
                f"timm model {name!r} has {key} {config[key]} by its {sources[key]}, but the "
                f"weights have {value}"
            )
        config[key], sources[key] = value, "shapes"
    config["in_chans"], sources["in_chans"] = int(proj.shape[1]), "shapes"
    config["mlp_hidden"], sources["mlp_hidden"] = (
        int(state["blocks.0.mlp.fc1.weight"].shape[0]),
        "shapes",
    )
    head = state.get("head.weight")
    config["num_classes"], sources["num_classes"] = (
        (0 if head is None else int(head.shape[0])),
        "shapes",
    )
    config["architecture"] = name
    config["sources"] = sources
    return config


def spec(config: Config, architecture: str) -> dict[str, Any]:
    """The spec of a resolved timm ViT config (see :func:`resolve`)."""
    _check(config, architecture)
    dim, heads = int(config["embed_dim"]), int(config["num_heads"])
    if dim % heads:
        raise ConversionError(f"num_heads ({heads}) must divide embed_dim ({dim})")
    block: dict[str, Any] = {
        "attention": {"heads": heads, "bias": True},
        "mlp": {"hidden": int(config["mlp_hidden"]), "activation": "gelu"},
        "norm": {"kind": "layernorm", "placement": "pre", "eps": 1e-6},
    }
    if config.get("layer_scale"):
        block["layer_scale"] = 1e-6  # DeiT III's initial value; the weights replace it
    count = 2 if architecture == "VisionTransformerDistilled" else 1
    patches = {
        "op": "patch_embed",
        "input": "image",
        "dim": dim,
        "patch_size": config["patch_size"],
    }
    if config.get("no_embed_class"):  # positions on the patches only, then the tokens
        tokens = {
            "pos": {"op": "position", "input": "patches", "encoding": "learned"},
            "cls": {"op": "cls_token", "input": "pos", "count": count},
        }
        last = "cls"
    else:
        tokens = {
            "cls": {"op": "cls_token", "input": "patches", "count": count},
            "pos": {"op": "position", "input": "cls", "encoding": "learned"},
        }
        last = "pos"
    nodes: dict[str, Any] = {
        "patches": patches,
        **tokens,
        "encoder": {"op": "encoder", "input": last, "depth": int(config["depth"]), "block": block},
        "norm": {"op": "norm", "input": "encoder", "kind": "layernorm", "eps": 1e-6},
    }
    output = _heads(nodes, int(config["num_classes"]), count)
    return {
        "version": 1,
        "name": str(config["architecture"]).replace(".", "-"),
        "description": f"timm {config['architecture']} ({architecture}), converted by archlab.",
        "inputs": {
            "image": {
                "kind": "image",
                "channels": int(config["in_chans"]),
                "size": config["img_size"],
            }
        },
        "nodes": nodes,
        "outputs": output,
    }


def _heads(nodes: dict[str, Any], classes: int, count: int) -> str:
    """Add the head nodes (one per special token, averaged when two); return the output id."""
    modes = {"head": "cls", "head_dist": "distill"}
    ids = list(modes)[:count]
    for node_id in ids:
        nodes[node_id] = (
            {"op": "classify", "input": "norm", "classes": classes, "pool": modes[node_id]}
            if classes > 0
            else {"op": "pool", "input": "norm", "mode": modes[node_id]}
        )
    if count == 1:
        return "head"
    nodes["logits"] = {"op": "average", "inputs": ids}
    return "logits"


def weights(state: StateDict, config: Config, architecture: str) -> dict[str, Tensor]:
    """archlab's state dict for :func:`spec`'s model, from timm's tensors."""
    _check(config, architecture)
    left = dict(state)
    missing: list[str] = []

    def take(key: str) -> Tensor:
        if key not in left:
            missing.append(key)
            return torch.empty(0)
        return left.pop(key)

    distilled = architecture == "VisionTransformerDistilled"
    tokens = [take("cls_token")] + ([take("dist_token")] if distilled else [])
    out = {
        "patches.proj.weight": take("patch_embed.proj.weight"),
        "patches.proj.bias": take("patch_embed.proj.bias"),
        "cls.tokens": torch.cat(tokens, dim=1),
        "pos.weight": take("pos_embed")[0],
        "norm.weight": take("norm.weight"),
        "norm.bias": take("norm.bias"),
    }
    parts = ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"]
    ours = {"attn.qkv": "attention.qkv", "attn.proj": "attention.out"}
    for i in range(int(config["depth"])):
        for part in parts:
            for kind in ("weight", "bias"):
                out[f"encoder.layers.{i}.{ours.get(part, part)}.{kind}"] = take(
                    f"blocks.{i}.{part}.{kind}"
                )
        if config.get("layer_scale"):
            for ls in ("ls1", "ls2"):
                out[f"encoder.layers.{i}.{ls}.gamma"] = take(f"blocks.{i}.{ls}.gamma")
    if int(config["num_classes"]) > 0:
        for head in ["head", "head_dist"][: 1 + int(distilled)]:
            out[f"{head}.fc.weight"] = take(f"{head}.weight")
            out[f"{head}.fc.bias"] = take(f"{head}.bias")
    if missing:
        raise ConversionError(f"timm checkpoint lacks tensors: {', '.join(missing)}")
    if left:
        raise ConversionError(
            f"timm checkpoint has tensors archlab has no place for: {', '.join(sorted(left))}"
        )
    return out


def _check(config: Config, architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise ConversionError(
            f"timm ViT checkpoints of class {architecture!r} are not supported; "
            f"supported: {', '.join(ARCHITECTURES)}"
        )
    if (architecture == "VisionTransformerDistilled") != bool(config.get("distilled")):
        raise ConversionError(
            f"timm model {config.get('architecture')!r} is "
            f"{'' if config.get('distilled') else 'not '}distilled; its class is "
            f"{ARCHITECTURES[int(bool(config.get('distilled')))]}, not {architecture}"
        )


def architecture_for(config: Config) -> str:
    """timm's class for a resolved config: ``VisionTransformerDistilled`` when distilled."""
    return ARCHITECTURES[int(bool(config.get("distilled")))]


#: Not registered under a Hugging Face ``model_type``: timm sources name their model instead.
FAMILY = Family("timm ViT", (), ARCHITECTURES, spec, weights)

__all__ = [
    "ARCHITECTURES",
    "FAMILY",
    "SIZES",
    "architecture_for",
    "parse_name",
    "resolve",
    "spec",
    "weights",
]
