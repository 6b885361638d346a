"""Hugging Face ViT (``model_type`` "vit"): ``ViTForImageClassification`` and ``ViTModel``.

A ViT is a patch embedding, one CLS token, learned positions, a pre-norm encoder and a final
LayerNorm; the classifier reads the CLS token. ``ViTModel`` converts as
``ViTModel(config, add_pooling_layer=False)``: its output is the last hidden state after the final
LayerNorm, and a pooler in the checkpoint (``pooler.dense``) is left out. Dropout is not carried
over (the spec is the model in eval mode).

Both the key names of published checkpoints (``encoder.layer.N.attention.attention.query``) and
those of ``transformers`` 5 (``layers.N.attention.q_proj``) are read. The helpers here are shared
with the DeiT family, which has the same encoder.

Export goes the other way for any spec of ViT's shape, whatever its node ids: an image input, a
``patch_embed``, one ``cls_token``, learned positions, a pre-LayerNorm ``encoder`` with biased
softmax attention, a final LayerNorm of the blocks' eps, and a ``classify`` on the CLS token
(``ViTForImageClassification``) or none (``ViTModel``; transformers adds a pooler the output does
not use: load it with ``add_pooling_layer=False``). ``qkv`` is split into query, key and value;
tensors are written under the published key names, which transformers 4 and 5 both load. Dropout
acts only in training: the attention's becomes ``attention_probs_dropout_prob``, the blocks'
``hidden_dropout_prob``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
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
from archlab.interop.families.exporting import cpu_copies, describe_node, differences, training_only
from archlab.specs import canonical_form
from archlab.specs.models import Spec

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


# ------------------------------------------------------------------------------------ export

#: archlab's MLP activation -> the ``hidden_act`` an export writes.
HIDDEN_ACTS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu", "silu": "silu"}

#: The nodes of a ViT-style model from the final norm back to the image, by role and op.
_ROLES = (
    ("norm", "norm"),
    ("encoder", "encoder"),
    ("pos", "position"),
    ("cls", "cls_token"),
    ("patches", "patch_embed"),
)


@dataclass(frozen=True)
class VisionLayout:
    """The node ids of a spec of ViT's shape: role (``patches``, ``cls``, ``pos``, ``encoder``,
    ``norm``) -> node id, the classifier heads (CLS first) and the ``average`` of two heads."""

    input: str
    roles: dict[str, str]
    heads: tuple[str, ...]
    average: str | None


def _source(nodes: dict[str, Any], node_id: str) -> str:
    """What ``node_id`` reads, dropout nodes (training only) skipped."""
    current = nodes[node_id]["input"]
    while current in nodes and nodes[current]["op"] == "dropout":
        current = nodes[current]["input"]
    return str(current)


def _heads(doc: dict[str, Any], family: str, problems: list[str]) -> tuple[list[str], str | None]:
    """The classifier heads the output is made of (none, one, or two averaged) and the average."""
    nodes, out = doc["nodes"], doc["outputs"][0]
    while out in nodes and nodes[out]["op"] == "dropout":
        out = nodes[out]["input"]
    average = out if nodes.get(out, {}).get("op") == "average" else None
    heads = (
        list(nodes[out]["inputs"])
        if average
        else [out]
        if nodes.get(out, {}).get("op") == "classify"
        else []
    )
    for head in heads:
        if nodes.get(head, {}).get("op") != "classify":
            problems.append(f"nodes.{average}: {family} averages classify heads only")
    heads.sort(key=lambda h: nodes.get(h, {}).get("pool") == "distill")
    return heads, average


def vision_layout(doc: dict[str, Any], family: str, problems: list[str]) -> VisionLayout | None:
    """The nodes of a canonical spec of ViT's shape (patch_embed -> cls_token -> position ->
    encoder -> norm [-> classify heads [-> average]]); what else it holds goes to ``problems``."""
    nodes = doc["nodes"]
    if len(doc["outputs"]) != 1:
        problems.append(f"outputs: {len(doc['outputs'])} outputs; a {family} model has one")
        return None
    heads, average = _heads(doc, family, problems)
    if problems:
        return None
    current = doc["outputs"][0] if not heads else _source(nodes, heads[0])
    while current in nodes and nodes[current]["op"] == "dropout":
        current = nodes[current]["input"]
    if any(_source(nodes, head) != current for head in heads):
        problems.append(f"nodes.{average}: {family}'s heads read the same final norm")
    roles: dict[str, str] = {}
    for role, op in _ROLES:
        node = nodes.get(current)
        if node is None or node["op"] != op:
            found = describe_node(node) if node is not None else f"input {current!r}"
            problems.append(f"nodes.{current}: {found} where {family} has op {op!r}")
            return None
        roles[role] = current
        current = _source(nodes, current)
    used = {*roles.values(), *heads, average}
    for node_id, node in nodes.items():
        if node_id not in used and node["op"] != "dropout":
            problems.append(
                f"nodes.{node_id}: {describe_node(node)} has no counterpart in {family}"
            )
    if len(doc["inputs"]) != 1 or doc["inputs"].get(current, {}).get("kind") != "image":
        problems.append(f"inputs: a {family} model has exactly one input, an image")
    return VisionLayout(current, roles, tuple(heads), average)


def _pair_or_int(pair: list[int]) -> int | list[int]:
    return pair[0] if pair[0] == pair[1] else list(pair)


def vision_config(
    doc: dict[str, Any], layout: VisionLayout, model_type: str, architecture: str
) -> dict[str, Any]:
    """The Hugging Face config of a spec of ViT's shape (its heads' classes as ``LABEL_i``)."""
    nodes = doc["nodes"]
    encoder = nodes[layout.roles["encoder"]]
    block = encoder["block"]
    image = doc["inputs"][layout.input]
    config: dict[str, Any] = {
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_size": nodes[layout.roles["patches"]]["dim"],
        "num_hidden_layers": encoder["depth"],
        "num_attention_heads": block["attention"]["heads"],
        "intermediate_size": block["mlp"]["hidden"],
        "hidden_act": HIDDEN_ACTS[block["mlp"]["activation"]],
        "hidden_dropout_prob": block["dropout"],
        "attention_probs_dropout_prob": block["attention"]["dropout"],
        "layer_norm_eps": block["norm"]["eps"],
        "image_size": _pair_or_int(image["size"]),
        "patch_size": _pair_or_int(nodes[layout.roles["patches"]]["patch_size"]),
        "num_channels": image["channels"],
        "qkv_bias": True,
    }
    if layout.heads:
        classes = int(nodes[layout.heads[0]]["classes"])
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(classes)}
        config["label2id"] = {f"LABEL_{i}": i for i in range(classes)}
    return config


def vision_problems(
    model_spec: Spec,
    family: str,
    architecture_of_layout: Callable[[VisionLayout], str],
    to_spec: Callable[[Config, str], dict[str, Any]],
) -> tuple[list[str], dict[str, Any], VisionLayout | None]:
    """What in ``model_spec`` the ViT-shaped ``family`` cannot express, the spec's canonical form
    and its layout; a fitting spec must convert back (``to_spec`` of its exported config) to
    itself, node ids, dropout and wiring aside, so that nothing the checks miss is dropped."""
    doc = canonical_form(model_spec)
    problems: list[str] = []
    layout = vision_layout(doc, family, problems)
    if layout is None or problems:
        return problems, doc, layout
    encoder_id = layout.roles["encoder"]
    activation = doc["nodes"][encoder_id]["block"]["mlp"]["activation"]
    if activation not in HIDDEN_ACTS:
        known = ", ".join(repr(a) for a in HIDDEN_ACTS)
        return (
            [f"nodes.{encoder_id}.block.mlp.activation: {activation!r}; {family} has {known}"],
            doc,
            layout,
        )
    if len(layout.heads) > 2:
        return [f"nodes.{layout.average}: {family} has at most two heads"], doc, layout
    architecture = architecture_of_layout(layout)
    try:
        back = training_only(
            canonical_form(to_spec(vision_config(doc, layout, "", architecture), architecture))
        )
    except ConversionError as exc:
        return [f"nodes.{encoder_id}.block.attention: {exc}"], doc, layout
    ours = training_only(doc)
    standard: dict[str, str] = {node_id: role for role, node_id in layout.roles.items()}
    standard |= dict(zip(layout.heads, ("head", "head_dist"), strict=False))
    if layout.average is not None:
        standard[layout.average] = "logits"
    for node_id, role in standard.items():
        if role not in back["nodes"]:
            what = describe_node(ours["nodes"][node_id])
            problems.append(f"nodes.{node_id}: {what} has no counterpart in {family}")
            continue
        mine = {k: v for k, v in ours["nodes"][node_id].items() if k not in ("input", "inputs")}
        theirs = {k: v for k, v in back["nodes"][role].items() if k not in ("input", "inputs")}
        for where, value, wanted in differences(mine, theirs, f"nodes.{node_id}"):
            problems.append(f"{where}: {value!r}; {family} has {wanted!r}")
    image = ours["inputs"][layout.input]
    for where, value, wanted in differences(
        image, back["inputs"]["image"], f"inputs.{layout.input}"
    ):
        problems.append(f"{where}: {value!r}; {family} has {wanted!r}")
    return problems, doc, layout


def vision_tensors(
    state: StateDict, layout: VisionLayout, doc: dict[str, Any], tokens: tuple[str, ...]
) -> dict[str, Tensor]:
    """The embeddings, encoder layers and final norm under the published ViT key names (no
    base-model prefix); ``tokens``: the names of the cls_token's tokens, in order."""
    roles, dim = layout.roles, int(doc["nodes"][layout.roles["patches"]]["dim"])
    patches, encoder = roles["patches"], roles["encoder"]
    out = {
        "embeddings.patch_embeddings.projection.weight": state[f"{patches}.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": state[f"{patches}.proj.bias"],
        "embeddings.position_embeddings": state[f"{roles['pos']}.weight"][None],
    }
    for k, token in enumerate(tokens):
        out[f"embeddings.{token}"] = state[f"{roles['cls']}.tokens"][:, k : k + 1]
    names = {
        "attention.out": "attention.output.dense",
        "norm1": "layernorm_before",
        "norm2": "layernorm_after",
        "mlp.fc1": "intermediate.dense",
        "mlp.fc2": "output.dense",
    }
    for i in range(int(doc["nodes"][encoder]["depth"])):
        src, dst = f"{encoder}.layers.{i}.", f"encoder.layer.{i}."
        for part in ("weight", "bias"):
            qkv = state[f"{src}attention.qkv.{part}"]
            for k, name in enumerate(("query", "key", "value")):
                out[f"{dst}attention.attention.{name}.{part}"] = qkv[k * dim : (k + 1) * dim]
            for ours, theirs in names.items():
                out[f"{dst}{theirs}.{part}"] = state[f"{src}{ours}.{part}"]
    out["layernorm.weight"] = state[f"{roles['norm']}.weight"]
    out["layernorm.bias"] = state[f"{roles['norm']}.bias"]
    return out


def finish_export(
    config: dict[str, Any], out: dict[str, Tensor]
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``config`` with the tensors' dtype, and each tensor its own contiguous CPU copy."""
    dtype = str(next(iter(out.values())).dtype).removeprefix("torch.")
    tensors = cpu_copies(out)
    return {**config, "torch_dtype": dtype}, tensors


def _architecture(layout: VisionLayout) -> str:
    return "ViTForImageClassification" if layout.heads else "ViTModel"


def export_problems(model_spec: Spec) -> list[str]:
    """What in ``model_spec`` ViT cannot express (empty: it exports exactly)."""
    return vision_problems(model_spec, "ViT", _architecture, spec)[0]


def export(model_spec: Spec, state: StateDict) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The ``ViTForImageClassification`` (a spec with a classifier) or ``ViTModel`` config and
    state dict of ``model_spec``'s model, from archlab's state dict."""
    problems, doc, layout = vision_problems(model_spec, "ViT", _architecture, spec)
    if problems or layout is None:
        raise ConversionError("the spec cannot be exported to ViT: " + "; ".join(problems))
    architecture = _architecture(layout)
    prefix = "vit." if layout.heads else ""
    out = {prefix + k: v for k, v in vision_tensors(state, layout, doc, ("cls_token",)).items()}
    if layout.heads:
        out["classifier.weight"] = state[f"{layout.heads[0]}.fc.weight"]
        out["classifier.bias"] = state[f"{layout.heads[0]}.fc.bias"]
    return finish_export(vision_config(doc, layout, "vit", architecture), out)


FAMILY = register(
    Family(
        "ViT",
        ("vit",),
        ("ViTForImageClassification", "ViTModel"),
        spec,
        weights,
        export_problems,
        export,
    )
)

__all__ = [
    "FAMILY",
    "HIDDEN_ACTS",
    "VisionLayout",
    "export",
    "export_problems",
    "finish_export",
    "spec",
    "vision_config",
    "vision_layout",
    "vision_problems",
    "vision_tensors",
    "weights",
]
