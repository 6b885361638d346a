"""Hugging Face ViT (``model_type`` "vit"): ``ViTForImageClassification`` and ``ViTModel``.

A ViT is a patch embedding, one CLS token, learned positions, a pre-norm encoder and a final
LayerNorm; the classifier reads the CLS token. ``ViTModel`` converts as
``ViTModel(config, add_pooling_layer=False)``: its output is the last hidden state after the final
LayerNorm, and a pooler in the checkpoint (``pooler.dense``) is left out. Dropout is not carried
over (the spec is the model in eval mode).

Both the key names of published checkpoints (``encoder.layer.N.attention.attention.query``) and
those of ``transformers`` 5 (``layers.N.attention.q_proj``) are read. The helpers here are shared
with the DeiT family, which has the same encoder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from archlab.interop.families import (
    Config,
    ConversionError,
    Family,
    StateDict,
    architecture_of,
    register,
)

#: Hugging Face ``hidden_act`` -> archlab's MLP activation.
ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}

#: Published (transformers 4) key names -> transformers 5 names, applied in order.
_RENAMES = (
    (re.compile(r"encoder\.layer\.(\d+)\."), r"layers.\1."),
    (re.compile(r"\.attention\.attention\.query\."), ".attention.q_proj."),
    (re.compile(r"\.attention\.attention\.key\."), ".attention.k_proj."),
    (re.compile(r"\.attention\.attention\.value\."), ".attention.v_proj."),
    (re.compile(r"\.attention\.output\.dense\."), ".attention.o_proj."),
    (re.compile(r"\.intermediate\.dense\."), ".mlp.fc1."),
    (re.compile(r"(layers\.\d+)\.output\.dense\."), r"\1.mlp.fc2."),
)


def image_size(config: Config, key: str = "image_size") -> list[int]:
    """``[H, W]`` from an int or a pair."""
    size = config.get(key, 224)
    return [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]


def patch_size(config: Config) -> int | list[int]:
    """``patch_size`` as an int, or ``[ph, pw]`` when given as a pair."""
    size = config.get("patch_size", 16)
    return int(size) if isinstance(size, int) else [int(s) for s in size]


def activation(config: Config) -> str:
    act = str(config.get("hidden_act", "gelu"))
    if act not in ACTIVATIONS:
        known = ", ".join(sorted(ACTIVATIONS))
        raise ConversionError(f"hidden_act {act!r} has no archlab equivalent; supported: {known}")
    return ACTIVATIONS[act]


def num_labels(config: Config) -> int:
    """The classifier's size: ``id2label``'s length, else ``num_labels`` (2 by default)."""
    id2label = config.get("id2label")
    return len(id2label) if id2label else int(config.get("num_labels", 2))


def encoder_nodes(config: Config, input_id: str) -> dict[str, Any]:
    """The ``encoder`` and final ``norm`` nodes of a ViT-style pre-norm encoder."""
    dim, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    if dim % heads:
        raise ConversionError(f"num_attention_heads ({heads}) must divide hidden_size ({dim})")
    if not config.get("qkv_bias", True):
        # archlab's attention has one bias switch for qkv and the output projection.
        raise ConversionError("qkv_bias false (q, k, v without bias, output with) is not supported")
    eps = float(config.get("layer_norm_eps", 1e-12))
    return {
        "encoder": {
            "op": "encoder",
            "input": input_id,
            "depth": int(config["num_hidden_layers"]),
            "block": {
                "attention": {"heads": heads, "bias": True},
                "mlp": {
                    "hidden": int(config["intermediate_size"]),
                    "activation": activation(config),
                },
                "norm": {"kind": "layernorm", "placement": "pre", "eps": eps},
            },
        },
        "norm": {"op": "norm", "input": "encoder", "kind": "layernorm", "eps": eps},
    }


def image_input(config: Config) -> dict[str, Any]:
    return {
        "image": {
            "kind": "image",
            "channels": int(config.get("num_channels", 3)),
            "size": image_size(config),
        }
    }


def spec(config: Config, architecture: str) -> dict[str, Any]:
    """The spec of a ViT config; ``architecture`` picks the output (logits or hidden states)."""
    architecture = architecture_of({**config, "architectures": [architecture]}, FAMILY)
    nodes: dict[str, Any] = {
        "patches": {
            "op": "patch_embed",
            "input": "image",
            "dim": int(config["hidden_size"]),
            "patch_size": patch_size(config),
        },
        "cls": {"op": "cls_token", "input": "patches"},
        "pos": {"op": "position", "input": "cls", "encoding": "learned"},
        **encoder_nodes(config, "pos"),
    }
    outputs = "norm"
    if architecture == "ViTForImageClassification":
        classes = num_labels(config)
        # transformers makes the classifier an Identity when there are no labels.
        nodes["head"] = (
            {"op": "classify", "input": "norm", "classes": classes, "pool": "cls"}
            if classes > 0
            else {"op": "pool", "input": "norm", "mode": "cls"}
        )
        outputs = "head"
    return {
        "version": 1,
        "name": str(config.get("_name_or_path") or "vit").replace("/", "-") or "vit",
        "description": f"Hugging Face {architecture}, converted by archlab.",
        "inputs": image_input(config),
        "nodes": nodes,
        "outputs": outputs,
    }


def normalized(state: StateDict, prefix: str) -> dict[str, Tensor]:
    """``state`` with transformers 5 key names and the base-model ``prefix`` (``vit.``) removed."""
    out: dict[str, Tensor] = {}
    for key, tensor in state.items():
        name = key[len(prefix) :] if key.startswith(prefix) else key
        for pattern, repl in _RENAMES:
            name = pattern.sub(repl, name)
        out[name] = tensor
    return out


class Taker:
    """Takes tensors out of a normalised state dict by name, so that leftovers can be reported."""

    def __init__(self, state: Mapping[str, Tensor], family: str) -> None:
        self.state, self.family = dict(state), family
        self.missing: list[str] = []

    def __call__(self, key: str) -> Tensor:
        if key not in self.state:
            self.missing.append(key)
            return torch.empty(0)
        return self.state.pop(key)

    def finish(self, ignored: Iterable[str] = ()) -> None:
        """Raise if a tensor was missing or one is left that the spec has no place for."""
        left = sorted(k for k in self.state if not any(k.startswith(p) for p in ignored))
        if self.missing:
            raise ConversionError(
                f"{self.family} checkpoint lacks tensors: {', '.join(self.missing)}"
            )
        if left:
            raise ConversionError(
                f"{self.family} checkpoint has tensors archlab has no place for: {', '.join(left)}"
            )


def encoder_weights(take: Taker, config: Config) -> dict[str, Tensor]:
    """The encoder layers and the final norm, with q, k and v fused into ``qkv``."""
    out: dict[str, Tensor] = {}
    for i in range(int(config["num_hidden_layers"])):
        src, dst = f"layers.{i}.", f"encoder.layers.{i}."
        for part in ("weight", "bias"):
            qkv = [take(f"{src}attention.{p}_proj.{part}") for p in "qkv"]
            out[f"{dst}attention.qkv.{part}"] = torch.cat(qkv, dim=0)
        names = {
            "attention.out": "attention.o_proj",
            "norm1": "layernorm_before",
            "norm2": "layernorm_after",
            "mlp.fc1": "mlp.fc1",
            "mlp.fc2": "mlp.fc2",
        }
        for ours, theirs in names.items():
            out[f"{dst}{ours}.weight"] = take(f"{src}{theirs}.weight")
            out[f"{dst}{ours}.bias"] = take(f"{src}{theirs}.bias")
    out["norm.weight"] = take("layernorm.weight")
    out["norm.bias"] = take("layernorm.bias")
    return out


def embedding_weights(take: Taker, tokens: Iterable[str]) -> dict[str, Tensor]:
    """Patch projection, the prepended tokens (in order) and the position table."""
    return {
        "patches.proj.weight": take("embeddings.patch_embeddings.projection.weight"),
        "patches.proj.bias": take("embeddings.patch_embeddings.projection.bias"),
        "cls.tokens": torch.cat([take(f"embeddings.{t}") for t in tokens], dim=1),
        "pos.weight": take("embeddings.position_embeddings")[0],
    }


def weights(state: StateDict, config: Config, architecture: str) -> dict[str, Tensor]:
    """archlab's state dict for :func:`spec`'s model, from a ViT checkpoint's tensors."""
    architecture = architecture_of({**config, "architectures": [architecture]}, FAMILY)
    take = Taker(normalized(state, "vit."), "ViT")
    out = embedding_weights(take, ["cls_token"]) | encoder_weights(take, config)
    if architecture == "ViTForImageClassification" and num_labels(config) > 0:
        out["head.fc.weight"] = take("classifier.weight")
        out["head.fc.bias"] = take("classifier.bias")
    take.finish(ignored=("pooler.", "embeddings.mask_token"))
    return out


FAMILY = register(Family("ViT", ("vit",), ("ViTForImageClassification", "ViTModel"), spec, weights))

__all__ = ["FAMILY", "spec", "weights"]
