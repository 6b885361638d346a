"""BERT (Devlin et al. 2019) from Hugging Face ``transformers``: ``BertModel`` and
``BertForSequenceClassification``.

The spec takes the word-piece ``ids`` (padding given by ``ids_mask``, True = real token, as HF's
``attention_mask``; the spec sets no ``pad_id``, since HF masks nothing by id) and the segment ids
``token_types`` as a second tokens input. Word and token-type embeddings are summed (an ``add``),
learned positions added, then the embedding LayerNorm and a post-norm encoder. The classifier
reads the first position (``[CLS]``) through BERT's pooler, a Linear and tanh (the ``classify``
node's ``pre_logits``). HF's separate query, key and value Linears become archlab's fused
``qkv`` (queries, keys, values, each head-major, which is HF's own row order).

Export goes the other way for any spec of BERT's shape, whatever its node ids: two token inputs,
each through an ``embed``, summed by an ``add`` (its first input is the word embedding, its second
the token types), learned positions, a LayerNorm, a post-LayerNorm ``encoder`` with unmasked
softmax attention, and a ``classify`` head on the ``first`` position with a tanh ``pre_logits``
(``BertForSequenceClassification``) or none (``BertModel``, whose pooler transformers then
initialises afresh: it takes no part in the last hidden state). Dropout nodes may sit anywhere.
The spec is compared with the one its exported config converts back to, so every other difference
is refused by its spec path. ``pad_token_id`` is left unset, as archlab has no padding row.
"""

from __future__ import annotations

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
from archlab.interop.families.exporting import (
    cpu_copies,
    describe_node,
    renamed_differences,
    training_only,
)
from archlab.specs import canonical_form
from archlab.specs.models import Spec

#: HF ``hidden_act`` -> archlab's MLP activation (``gelu`` is the exact erf GELU in both).
ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}

CLASSIFIER = "BertForSequenceClassification"


def _sizes(config: Config) -> dict[str, Any]:
    """The BertConfig values the spec needs (HF's defaults where left out), checked."""
    unsupported = {
        "position_embedding_type": ("absolute", "only absolute positions"),
        "is_decoder": (False, "only encoders"),
        "add_cross_attention": (False, "no cross-attention"),
    }
    for key, (wanted, what) in unsupported.items():
        value = config.get(key, wanted)
        if value != wanted:
            raise ConversionError(f"BERT config has {key}={value!r}; archlab converts {what}")
    act = config.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        known = ", ".join(ACTIVATIONS)
        raise ConversionError(f"BERT hidden_act {act!r} is not supported; supported: {known}")
    sizes: dict[str, Any] = {
        "vocab": int(config.get("vocab_size", 30522)),
        "dim": int(config.get("hidden_size", 768)),
        "depth": int(config.get("num_hidden_layers", 12)),
        "heads": int(config.get("num_attention_heads", 12)),
        "hidden": int(config.get("intermediate_size", 3072)),
        "max_len": int(config.get("max_position_embeddings", 512)),
        "types": int(config.get("type_vocab_size", 2)),
        "eps": float(config.get("layer_norm_eps", 1e-12)),
        "activation": ACTIVATIONS[act],
        "dropout": float(config.get("hidden_dropout_prob", 0.1)),
        "attention_dropout": float(config.get("attention_probs_dropout_prob", 0.1)),
        "labels": num_labels(config),
    }
    if sizes["dim"] % sizes["heads"]:
        raise ConversionError(
            f"BERT hidden_size {sizes['dim']} is not a multiple of "
            f"num_attention_heads {sizes['heads']}"
        )
    return sizes


def num_labels(config: Config) -> int:
    """The classes of a classification head: ``id2label``'s size, as HF counts them."""
    id2label = config.get("id2label")
    return len(id2label) if id2label else int(config.get("num_labels", 2))


def spec(config: Config, architecture: str) -> dict[str, Any]:
    """The spec document of a BERT config and architecture."""
    architecture_of({"architectures": [architecture]}, FAMILY)
    s = _sizes(config)
    tokens = {"kind": "tokens", "max_len": s["max_len"]}
    block = {
        "attention": {"heads": s["heads"], "bias": True, "dropout": s["attention_dropout"]},
        "mlp": {"hidden": s["hidden"], "activation": s["activation"]},
        "norm": {"kind": "layernorm", "placement": "post", "eps": s["eps"]},
        "dropout": s["dropout"],
    }
    nodes: dict[str, Any] = {
        "tok": {"op": "embed", "input": "ids", "dim": s["dim"]},
        "types": {"op": "embed", "input": "token_types", "dim": s["dim"]},
        "embeddings": {"op": "add", "inputs": ["tok", "types"]},
        "pos": {"op": "position", "input": "embeddings", "encoding": "learned"},
        "emb_norm": {"op": "norm", "input": "pos", "kind": "layernorm", "eps": s["eps"]},
        "emb_drop": {"op": "dropout", "input": "emb_norm", "p": s["dropout"]},
        "encoder": {"op": "encoder", "input": "emb_drop", "depth": s["depth"], "block": block},
    }
    output = "encoder"
    if architecture == CLASSIFIER:
        nodes["head"] = {
            "op": "classify",
            "input": "encoder",
            "classes": s["labels"],
            "pool": "first",
            "pre_logits": {"activation": "tanh"},
        }
        output = "head"
        head = f"the pooler (Linear + tanh on [CLS]) and a {s['labels']}-class classifier"
    else:
        head = "no head: the output is the last hidden state"
    return {
        "version": 1,
        "name": str(config.get("_name_or_path") or "bert").rsplit("/", 1)[-1] or "bert",
        "description": (
            f"Imported from Hugging Face {architecture}: {s['depth']} post-norm layers of "
            f"{s['heads']} heads, width {s['dim']}, {s['types']} token types; {head}. "
            "HF's dropout before the classifier is not modelled (identical at inference)."
        ),
        "inputs": {
            "ids": {**tokens, "vocab_size": s["vocab"]},
            "token_types": {**tokens, "vocab_size": s["types"]},
        },
        "nodes": nodes,
        "outputs": output,
    }


def _renames(depth: int, architecture: str) -> dict[str, str]:
    """archlab name -> HF name (without the ``bert.`` prefix) for every tensor but ``qkv``."""
    names = {
        "tok.weight": "embeddings.word_embeddings.weight",
        "types.weight": "embeddings.token_type_embeddings.weight",
        "pos.weight": "embeddings.position_embeddings.weight",
        "emb_norm.weight": "embeddings.LayerNorm.weight",
        "emb_norm.bias": "embeddings.LayerNorm.bias",
    }
    parts = {
        "attention.out": "attention.output.dense",
        "norm1": "attention.output.LayerNorm",
        "mlp.fc1": "intermediate.dense",
        "mlp.fc2": "output.dense",
        "norm2": "output.LayerNorm",
    }
    for i in range(depth):
        for ours, theirs in parts.items():
            for p in ("weight", "bias"):
                names[f"encoder.layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
    if architecture == CLASSIFIER:
        for p in ("weight", "bias"):
            names[f"head.pre_logits.{p}"] = f"pooler.dense.{p}"
            names[f"head.fc.{p}"] = f"classifier.{p}"
    return names


def _unprefixed(state: StateDict) -> dict[str, Tensor]:
    """HF's keys without the ``bert.`` prefix and with old ``gamma``/``beta`` LayerNorm names."""
    out: dict[str, Tensor] = {}
    for key, tensor in state.items():
        key = key.removeprefix("bert.")
        if "LayerNorm." in key:
            key = key.replace("LayerNorm.gamma", "LayerNorm.weight")
            key = key.replace("LayerNorm.beta", "LayerNorm.bias")
        out[key] = tensor
    return out


def _expected_shapes(s: dict[str, Any], architecture: str) -> dict[str, tuple[int, ...]]:
    """archlab name -> the shape the config implies, for every tensor."""
    d, f = s["dim"], s["hidden"]
    shapes: dict[str, tuple[int, ...]] = {
        "tok.weight": (s["vocab"], d),
        "types.weight": (s["types"], d),
        "pos.weight": (s["max_len"], d),
        "emb_norm.weight": (d,),
        "emb_norm.bias": (d,),
    }
    layer = {
        "attention.qkv.weight": (3 * d, d),
        "attention.qkv.bias": (3 * d,),
        "attention.out.weight": (d, d),
        "attention.out.bias": (d,),
        "norm1.weight": (d,),
        "norm1.bias": (d,),
        "mlp.fc1.weight": (f, d),
        "mlp.fc1.bias": (f,),
        "mlp.fc2.weight": (d, f),
        "mlp.fc2.bias": (d,),
        "norm2.weight": (d,),
        "norm2.bias": (d,),
    }
    for i in range(s["depth"]):
        shapes.update({f"encoder.layers.{i}.{k}": v for k, v in layer.items()})
    if architecture == CLASSIFIER:
        shapes |= {"head.pre_logits.weight": (d, d), "head.pre_logits.bias": (d,)}
        shapes |= {"head.fc.weight": (s["labels"], d), "head.fc.bias": (s["labels"],)}
    return shapes


def weights(state: StateDict, config: Config, architecture: str) -> dict[str, Tensor]:
    """archlab's state dict for ``spec(config, architecture)`` from a HF BERT state dict."""
    s = _sizes(config)
    hf = _unprefixed(state)
    extra = sorted(
        k for k in hf if k.startswith("encoder.layer.") and int(k.split(".")[2]) >= s["depth"]
    )
    if extra:
        raise ConversionError(
            f"the checkpoint has layers the config does not (num_hidden_layers {s['depth']}): "
            f"{', '.join(extra[:4])}"
        )
    names = _renames(s["depth"], architecture)
    needed = list(names.values())
    for i in range(s["depth"]):
        needed += [
            f"encoder.layer.{i}.attention.self.{proj}.{p}"
            for proj in ("query", "key", "value")
            for p in ("weight", "bias")
        ]
    missing = [k for k in needed if k not in hf]
    if missing:
        more = f" (and {len(missing) - 6} more)" if len(missing) > 6 else ""
        raise ConversionError(f"the BERT checkpoint lacks {', '.join(missing[:6])}{more}")
    out = {ours: hf[theirs] for ours, theirs in names.items()}
    for i in range(s["depth"]):
        prefix = f"encoder.layer.{i}.attention.self"
        for p in ("weight", "bias"):
            parts = [hf[f"{prefix}.{proj}.{p}"] for proj in ("query", "key", "value")]
            if len({tuple(t.shape) for t in parts}) != 1:
                shapes = ", ".join(str(tuple(t.shape)) for t in parts)
                raise ConversionError(f"{prefix}.query/key/value.{p} differ in shape: {shapes}")
            out[f"encoder.layers.{i}.attention.qkv.{p}"] = torch.cat(parts, dim=0)
    for name, shape in _expected_shapes(s, architecture).items():
        if tuple(out[name].shape) != shape:
            source = names.get(name, name)
            raise ConversionError(
                f"tensor {source} has shape {tuple(out[name].shape)}, but the config implies "
                f"{shape} (for archlab's {name})"
            )
    return out


# ------------------------------------------------------------------------------------ export

#: archlab's MLP activation -> the ``hidden_act`` an export writes.
EXPORT_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}


@dataclass(frozen=True)
class _Layout:
    """The node and input ids of a spec of BERT's shape (``head`` None: a bare ``BertModel``)."""

    ids: str
    token_types: str
    words: str
    types: str
    add: str
    position: str
    norm: str
    encoder: str
    head: str | None


class _Walk:
    """Follows a spec's nodes from the output back, dropout nodes skipped and remembered."""

    def __init__(self, nodes: dict[str, Any]) -> None:
        self.nodes, self.seen = nodes, set[str]()

    def node(self, node_id: Any, op: str, problems: list[str], what: str) -> str | None:
        """``node_id`` after any dropout, when it is a node of ``op``; else a problem."""
        while isinstance(node_id, str) and self.nodes.get(node_id, {}).get("op") == "dropout":
            self.seen.add(node_id)
            node_id = self.nodes[node_id]["input"]
        node = self.nodes.get(node_id) if isinstance(node_id, str) else None
        if node is None or node["op"] != op:
            found = describe_node(node) if node is not None else f"input {node_id!r}"
            problems.append(f"nodes: BERT has {what} (op {op!r}) here; this spec has {found}")
            return None
        assert isinstance(node_id, str)
        self.seen.add(node_id)
        return node_id


def _layout(doc: dict[str, Any], problems: list[str]) -> _Layout | None:
    """BERT's nodes: (ids -> embed, token types -> embed) -> add -> position -> norm ->
    encoder [-> classify]; whatever else the spec holds is a problem."""
    nodes, outputs = doc["nodes"], doc["outputs"]
    if len(outputs) != 1:
        problems.append(f"outputs: {len(outputs)} outputs; a BERT model has one")
        return None
    walk = _Walk(nodes)
    head = outputs[0] if nodes.get(outputs[0], {}).get("op") == "classify" else None
    if head is not None:
        walk.seen.add(head)
    top = nodes[head]["input"] if head is not None else outputs[0]
    encoder = walk.node(top, "encoder", problems, "the encoder stack")
    norm = encoder and walk.node(nodes[encoder]["input"], "norm", problems, "the embedding norm")
    position = norm and walk.node(nodes[norm]["input"], "position", problems, "positions")
    add = position and walk.node(nodes[position]["input"], "add", problems, "words + types")
    if encoder is None or norm is None or position is None or add is None:
        return None
    summed = nodes[add]["inputs"]
    if len(summed) != 2:
        problems.append(f"nodes.{add}.inputs: {len(summed)} inputs; BERT adds words and types")
        return None
    words = walk.node(summed[0], "embed", problems, "the word embedding")
    types = walk.node(summed[1], "embed", problems, "the token-type embedding")
    if words is None or types is None:
        return None
    for node_id in nodes:
        if node_id not in walk.seen and nodes[node_id]["op"] != "dropout":
            problems.append(
                f"nodes.{node_id}: {describe_node(nodes[node_id])} has no counterpart in BERT"
            )
    ids, token_types = nodes[words]["input"], nodes[types]["input"]
    inputs = doc["inputs"]
    if ids == token_types or set(inputs) != {ids, token_types}:
        problems.append("inputs: a BERT model has two inputs, token ids and token types")
    elif any(inputs[name].get("kind") != "tokens" for name in (ids, token_types)):
        problems.append("inputs: BERT's inputs are both of kind 'tokens'")
    if problems:
        return None
    return _Layout(ids, token_types, words, types, add, position, norm, encoder, head)


def _config_of(doc: dict[str, Any], layout: _Layout, problems: list[str]) -> dict[str, Any]:
    """The BERT config a spec of BERT's shape exports with (read leniently: what does not fit
    shows up when the spec is compared with the one the config converts back to)."""
    nodes, inputs = doc["nodes"], doc["inputs"]
    block = nodes[layout.encoder]["block"]
    activation = block["mlp"]["activation"]
    if activation not in EXPORT_ACTIVATIONS:
        problems.append(
            f"nodes.{layout.encoder}.block.mlp.activation: {activation!r}; BERT has one of "
            + ", ".join(repr(a) for a in EXPORT_ACTIVATIONS)
        )
    config: dict[str, Any] = {
        "architectures": [CLASSIFIER if layout.head is not None else "BertModel"],
        "model_type": "bert",
        "vocab_size": inputs[layout.ids].get("vocab_size"),
        "type_vocab_size": inputs[layout.token_types].get("vocab_size"),
        "hidden_size": nodes[layout.words]["dim"],
        "num_hidden_layers": nodes[layout.encoder]["depth"],
        "num_attention_heads": block["attention"]["heads"],
        "intermediate_size": block["mlp"]["hidden"],
        "hidden_act": EXPORT_ACTIVATIONS.get(activation, "gelu"),
        "max_position_embeddings": nodes[layout.position].get("max_len")
        or inputs[layout.ids].get("max_len"),
        "layer_norm_eps": block["norm"]["eps"],
        "hidden_dropout_prob": block["dropout"],
        "attention_probs_dropout_prob": block["attention"]["dropout"],
        "position_embedding_type": "absolute",
        "is_decoder": False,
        "add_cross_attention": False,
        "pad_token_id": None,
    }
    if layout.head is not None:
        classes = int(nodes[layout.head]["classes"])
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(classes)}
        config["label2id"] = {f"LABEL_{i}": i for i in range(classes)}
    return config


def export_problems(model_spec: Spec) -> list[str]:
    """What in ``model_spec`` BERT cannot express (empty: it exports exactly)."""
    doc = canonical_form(model_spec)
    problems: list[str] = []
    layout = _layout(doc, problems)
    if layout is None:
        return problems
    config = _config_of(doc, layout, problems)
    if problems:
        return problems
    try:
        back = training_only(canonical_form(spec(config, config["architectures"][0])))
    except (ConversionError, ValueError) as exc:
        return [f"nodes.{layout.encoder}: {exc}"]
    ours = training_only(doc)
    roles: dict[str, tuple[str, dict[str, Any]]] = {
        layout.words: ("tok", {"input": "ids"}),
        layout.types: ("types", {"input": "token_types"}),
        layout.add: ("embeddings", {"inputs": ["tok", "types"]}),
        layout.position: ("pos", {"input": "embeddings"}),
        layout.norm: ("emb_norm", {"input": "pos"}),
        layout.encoder: ("encoder", {"input": "emb_drop"}),
    }
    if layout.head is not None:
        roles[layout.head] = ("head", {"input": "encoder"})
    inputs = {layout.ids: "ids", layout.token_types: "token_types"}
    return problems + renamed_differences(ours, back, roles, inputs, "BERT")


def export(model_spec: Spec, state: StateDict) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The ``BertForSequenceClassification`` (a spec with a ``classify`` head) or ``BertModel``
    config and state dict of ``model_spec``'s model from archlab's state dict: ``qkv`` split
    into ``query``, ``key`` and ``value``, each tensor its own contiguous CPU copy."""
    problems = export_problems(model_spec)
    if problems:
        raise ConversionError("the spec cannot be exported to BERT: " + "; ".join(problems))
    doc = canonical_form(model_spec)
    layout = _layout(doc, problems)
    assert layout is not None
    config = _config_of(doc, layout, problems)
    architecture, depth = config["architectures"][0], config["num_hidden_layers"]
    ids = {
        "tok": layout.words, "types": layout.types, "pos": layout.position,
        "emb_norm": layout.norm, "encoder": layout.encoder, "head": layout.head,
    }  # fmt: skip
    base = "bert." if architecture == CLASSIFIER else ""
    out: dict[str, Tensor] = {}
    for ours, theirs in _renames(depth, architecture).items():
        role, rest = ours.split(".", 1)
        out[theirs if theirs.startswith("classifier.") else base + theirs] = state[
            f"{ids[role]}.{rest}"
        ]
    dim = config["hidden_size"]
    for i in range(depth):
        for kind in ("weight", "bias"):
            qkv = state[f"{layout.encoder}.layers.{i}.attention.qkv.{kind}"]
            for j, proj in enumerate(("query", "key", "value")):
                name = f"{base}encoder.layer.{i}.attention.self.{proj}.{kind}"
                out[name] = qkv[j * dim : (j + 1) * dim]
    config["torch_dtype"] = str(state[f"{layout.words}.weight"].dtype).removeprefix("torch.")
    tensors = cpu_copies(out)
    return config, tensors


FAMILY = register(
    Family(
        "BERT",
        ("bert",),
        ("BertForSequenceClassification", "BertModel"),
        spec,
        weights,
        export_problems,
        export,
    )
)
