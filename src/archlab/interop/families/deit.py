"""Hugging Face DeiT (``model_type`` "deit"): ``DeiTForImageClassification``,
``DeiTForImageClassificationWithTeacher`` and ``DeiTModel``.

DeiT is ViT's encoder with two prepended tokens, CLS then the distillation token (a
``cls_token`` of count 2, whose positions are learned with the patches'). The classifier of
``DeiTForImageClassification`` reads the CLS token; the distilled
``DeiTForImageClassificationWithTeacher`` has a head on each token (``head`` on ``cls``,
``head_dist`` on ``distill``) and outputs their average, as at inference in transformers and timm.
``DeiTModel`` converts as ``DeiTModel(config, add_pooling_layer=False)``: the last hidden state,
after the final LayerNorm, both special tokens included; a pooler in the checkpoint is left out.
(The non-distilled checkpoints Facebook published are ``model_type`` "vit": the ViT family reads
them.)

Export takes any spec of that shape, whatever its node ids (the ViT family's checks with a
``cls_token`` of count 2): no head (``DeiTModel``; load it with ``add_pooling_layer=False``), one
classifier on the CLS token (``DeiTForImageClassification``), or a classifier on each token and
their ``average`` (``DeiTForImageClassificationWithTeacher``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from archlab.interop.families import (
    Config,
    ConversionError,
    Family,
    StateDict,
    architecture_of,
    register,
)
from archlab.interop.families.vit import (
    Taker,
    VisionLayout,
    embedding_weights,
    encoder_nodes,
    encoder_weights,
    finish_export,
    image_input,
    normalized,
    num_labels,
    patch_size,
    vision_config,
    vision_problems,
    vision_tensors,
)
from archlab.specs.models import Spec

ARCHITECTURES = (
    "DeiTForImageClassificationWithTeacher",
    "DeiTForImageClassification",
    "DeiTModel",
)

#: The heads of each architecture: (node id, pool mode, the checkpoint's classifier prefix).
_HEADS = {
    "DeiTForImageClassification": (("head", "cls", "classifier"),),
    "DeiTForImageClassificationWithTeacher": (
        ("head", "cls", "cls_classifier"),
        ("head_dist", "distill", "distillation_classifier"),
    ),
    "DeiTModel": (),
}


def _head_nodes(config: Config, architecture: str) -> tuple[dict[str, Any], str]:
    """The head nodes and the output's id."""
    classes = num_labels(config)
    nodes: dict[str, Any] = {}
    for node_id, mode, _ in _HEADS[architecture]:
        # transformers makes a classifier an Identity when there are no labels.
        nodes[node_id] = (
            {"op": "classify", "input": "norm", "classes": classes, "pool": mode}
            if classes > 0
            else {"op": "pool", "input": "norm", "mode": mode}
        )
    if len(nodes) > 1:
        nodes["logits"] = {"op": "average", "inputs": list(nodes)}
    return nodes, (list(nodes)[-1] if nodes else "norm")


def spec(config: Config, architecture: str) -> dict[str, Any]:
    """The spec of a DeiT config; ``architecture`` picks the heads."""
    architecture = architecture_of({**config, "architectures": [architecture]}, FAMILY)
    heads, output = _head_nodes(config, architecture)
    nodes: dict[str, Any] = {
        "patches": {
            "op": "patch_embed",
            "input": "image",
            "dim": int(config["hidden_size"]),
            "patch_size": patch_size(config),
        },
        "cls": {"op": "cls_token", "input": "patches", "count": 2},
        "pos": {"op": "position", "input": "cls", "encoding": "learned"},
        **encoder_nodes(config, "pos"),
        **heads,
    }
    return {
        "version": 1,
        "name": str(config.get("_name_or_path") or "deit").replace("/", "-") or "deit",
        "description": f"Hugging Face {architecture}, converted by archlab.",
        "inputs": image_input(config),
        "nodes": nodes,
        "outputs": output,
    }


def weights(state: StateDict, config: Config, architecture: str) -> dict[str, Tensor]:
    """archlab's state dict for :func:`spec`'s model, from a DeiT checkpoint's tensors."""
    architecture = architecture_of({**config, "architectures": [architecture]}, FAMILY)
    take = Taker(normalized(state, "deit."), "DeiT")
    out = embedding_weights(take, ["cls_token", "distillation_token"])
    out |= encoder_weights(take, config)
    if num_labels(config) > 0:
        for node_id, _, prefix in _HEADS[architecture]:
            out[f"{node_id}.fc.weight"] = take(f"{prefix}.weight")
            out[f"{node_id}.fc.bias"] = take(f"{prefix}.bias")
    take.finish(ignored=("pooler.", "embeddings.mask_token"))
    return out


def _architecture(layout: VisionLayout) -> str:
    return ("DeiTModel", "DeiTForImageClassification", "DeiTForImageClassificationWithTeacher")[
        len(layout.heads)
    ]


def export_problems(model_spec: Spec) -> list[str]:
    """What in ``model_spec`` DeiT cannot express (empty: it exports exactly)."""
    return vision_problems(model_spec, "DeiT", _architecture, spec)[0]


def export(model_spec: Spec, state: StateDict) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The DeiT config and state dict of ``model_spec``'s model (the architecture from its
    heads), from archlab's state dict."""
    problems, doc, layout = vision_problems(model_spec, "DeiT", _architecture, spec)
    if problems or layout is None:
        raise ConversionError("the spec cannot be exported to DeiT: " + "; ".join(problems))
    architecture = _architecture(layout)
    prefix = "deit." if layout.heads else ""
    tokens = ("cls_token", "distillation_token")
    out = {prefix + k: v for k, v in vision_tensors(state, layout, doc, tokens).items()}
    for node_id, (_, _, name) in zip(layout.heads, _HEADS[architecture], strict=True):
        out[f"{name}.weight"] = state[f"{node_id}.fc.weight"]
        out[f"{name}.bias"] = state[f"{node_id}.fc.bias"]
    return finish_export(vision_config(doc, layout, "deit", architecture), out)


FAMILY = register(Family("DeiT", ("deit",), ARCHITECTURES, spec, weights, export_problems, export))

__all__ = ["ARCHITECTURES", "FAMILY", "export", "export_problems", "spec", "weights"]
