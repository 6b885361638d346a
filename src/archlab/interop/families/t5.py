"""T5 (Hugging Face ``T5ForConditionalGeneration``): its config as an encoder-decoder spec with
inputs ``src`` and ``tgt``, and its tensors under archlab's names.

What makes the spec T5's exactly: one embedding shared by both stacks (and by the head when
tied), a relative-position bias computed once per stack (bidirectional buckets in the encoder,
causal in the decoder, none in cross-attention), pre-norm RMSNorm without bias, no bias anywhere,
attention ``scale`` 1 (T5 folds 1/sqrt(d_kv) into its query weights), final norms, and the
head's input rescaled by ``d_model**-0.5`` (``lm_head.scale``) where the config asks for it
(original T5's tied head; not T5 v1.1, whose untied head HF 5 keeps tied but unscaled).
Weights: HF's separate ``q``/``k``/``v`` become the fused ``qkv`` (cross-attention: ``q`` and a
fused ``kv``); a gated MLP's ``wi_0`` (gate) and ``wi_1`` (value) become ``fc1`` as value half
then gate half.

Export goes the other way for any spec of that shape, whatever its node ids: token inputs for the
source and the target, an embedding of the source that the target's embedding ties to, an encoder
and a decoder of pre-RMSNorm blocks without bias with a relative-position bias, attention
``scale`` 1 and a ReLU/GELU/SiLU or gated-GELU/SiLU MLP, final RMSNorms of the blocks' eps, and an
``lm_head``. A tied head rescaled by ``d_model**-0.5`` is ``tie_word_embeddings`` true; an untied
head without a rescale is written as ``lm_head.weight`` with ``tie_word_embeddings`` false, and so
is a tied head without a rescale (a copy of the embedding). Dropout acts only in training: the
attention's becomes ``dropout_rate``. The spec holds no special tokens: T5's (pad and decoder
start 0, end of sequence 1) are written, as T5's tokenizers use them.
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
from archlab.interop.families.exporting import cpu_copies, describe_node, differences, training_only
from archlab.specs import canonical_form
from archlab.specs.models import Spec

#: T5Config.feed_forward_proj -> archlab's activation (HF's "gated-gelu" runs gelu_new, the
#: tanh approximation; a plain "gelu" runs the exact GELU)
ACTIVATIONS = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "silu": "silu",
    "gated-gelu": "geglu_tanh",
    "gated-silu": "swiglu",
}
#: the config keys without which no spec can be written
REQUIRED = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")


def _setting(config: Config, key: str, default: Any = None) -> Any:
    value = config.get(key, default)
    if value is None:
        raise ConversionError(f"T5 config has no {key!r}")
    return value


def _activation(config: Config) -> str:
    proj = str(config.get("feed_forward_proj", "relu"))
    if proj not in ACTIVATIONS:
        known = ", ".join(ACTIVATIONS)
        raise ConversionError(f"T5 feed_forward_proj {proj!r} is not supported; supported: {known}")
    return ACTIVATIONS[proj]


def _block(config: Config, dropout: float) -> dict[str, Any]:
    eps = float(config.get("layer_norm_epsilon", 1e-6))
    position = {
        "kind": "relative_bias",
        "buckets": int(config.get("relative_attention_num_buckets", 32)),
        "max_distance": int(config.get("relative_attention_max_distance", 128)),
    }
    return {
        "attention": {
            "heads": int(config["num_heads"]),
            "head_dim": int(config["d_kv"]),
            "bias": False,
            "dropout": dropout,
            "position": position,
            "scale": 1.0,
        },
        "mlp": {
            "hidden": int(config["d_ff"]),
            "activation": _activation(config),
            "bias": False,
            "dropout": dropout,
        },
        "norm": {"kind": "rmsnorm", "placement": "pre", "eps": eps},
        "dropout": dropout,
    }


def _rescaled(config: Config) -> bool:
    """Whether the head's input is rescaled by d_model**-0.5: transformers 5 writes
    ``scale_decoder_outputs`` (and always ties the head); older configs rescale exactly when
    ``tie_word_embeddings``."""
    return bool(config.get("scale_decoder_outputs", config.get("tie_word_embeddings", True)))


def _dropout(nodes: dict[str, Any], name: str, source: str, p: float) -> str:
    """Add a dropout node ``name`` after ``source`` when ``p`` > 0; the id the next node reads."""
    if p <= 0.0:
        return source
    nodes[name] = {"op": "dropout", "input": source, "p": p}
    return name


def spec(config: Config, architecture: str) -> dict[str, Any]:
    """The spec of a ``T5ForConditionalGeneration`` with this config."""
    architecture_of({"architectures": [architecture]}, FAMILY)
    for key in REQUIRED:
        _setting(config, key)
    if not config.get("is_encoder_decoder", True):
        raise ConversionError("T5 checkpoints without a decoder are not supported")
    d_model, vocab = int(config["d_model"]), int(config["vocab_size"])
    eps = float(config.get("layer_norm_epsilon", 1e-6))
    p = float(config.get("dropout_rate", 0.0))
    tied = bool(config.get("tie_word_embeddings", True))
    max_len = int(config.get("n_positions") or 512)
    depth = int(config["num_layers"])
    decoder_depth = int(config.get("num_decoder_layers") or depth)
    # no pad_id: T5 masks only what attention_mask says (src_mask here), and its decoder input
    # starts with the pad id (decoder_start_token_id), which must stay a visible key
    tokens = {"kind": "tokens", "vocab_size": vocab, "max_len": max_len}
    block = _block(config, p)
    nodes: dict[str, Any] = {"shared": {"op": "embed", "input": "src", "dim": d_model}}
    src = _dropout(nodes, "src_drop", "shared", p)
    nodes["encoder"] = {"op": "encoder", "input": src, "depth": depth, "block": block}
    nodes["enc_norm"] = {"op": "norm", "input": "encoder", "kind": "rmsnorm", "eps": eps}
    memory = _dropout(nodes, "enc_drop", "enc_norm", p)
    nodes["tgt_tok"] = {"op": "embed", "input": "tgt", "tie": "shared"}
    tgt = _dropout(nodes, "tgt_drop", "tgt_tok", p)
    nodes["decoder"] = {
        "op": "decoder",
        "input": tgt,
        "memory": memory,
        "depth": decoder_depth,
        "block": block,
    }
    nodes["dec_norm"] = {"op": "norm", "input": "decoder", "kind": "rmsnorm", "eps": eps}
    head_in = _dropout(nodes, "dec_drop", "dec_norm", p)
    head: dict[str, Any] = {"op": "lm_head", "input": head_in}
    head |= {"tie": "tgt_tok"} if tied else {"vocab_size": vocab}
    if _rescaled(config):
        head["scale"] = d_model**-0.5
    nodes["lm_head"] = head
    name = str(config.get("_name_or_path") or "").rstrip("/").rsplit("/", 1)[-1] or "t5"
    return {
        "version": 1,
        "name": name,
        "description": (
            f"Imported from Hugging Face {architecture} (T5): {depth} encoder and "
            f"{decoder_depth} decoder layers, width {d_model}, {block['attention']['heads']} "
            f"heads of {block['attention']['head_dim']}, {block['mlp']['activation']} MLP of "
            f"{block['mlp']['hidden']}, {'tied' if tied else 'untied'} head; sequences up to "
            f"{max_len} tokens."
        ),
        "inputs": {"src": tokens, "tgt": dict(tokens)},
        "nodes": nodes,
        "outputs": "lm_head",
    }


class _Reader:
    """Takes tensors from a T5 state dict by name, remembering which were used."""

    def __init__(self, state: StateDict) -> None:
        self.state = state
        self.used: set[str] = set()

    def __call__(self, *names: str) -> Tensor:
        """The first of ``names`` the checkpoint holds (bare, or under a ``model.`` prefix)."""
        for name in names:
            for key in (name, f"model.{name}"):
                if key in self.state:
                    self.used.add(key)
                    return self.state[key]
        raise ConversionError(f"T5 checkpoint has no tensor {names[0]!r}")

    def unused(self) -> list[str]:
        """The checkpoint's tensors nothing took, less the copies of tied weights."""
        copies = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")
        return sorted(
            key
            for key in self.state
            if key not in self.used and key.removeprefix("model.") not in copies
        )


def _mlp(take: _Reader, hf: str, gated: bool) -> dict[str, Tensor]:
    """``fc1``/``fc2`` of one layer's feed-forward from ``{hf}.DenseReluDense``."""
    dense = f"{hf}.DenseReluDense"
    if gated:  # archlab: value half first, gate half second; HF: act(wi_0) * wi_1
        fc1 = torch.cat([take(f"{dense}.wi_1.weight"), take(f"{dense}.wi_0.weight")])
    else:
        fc1 = take(f"{dense}.wi.weight")
    return {"mlp.fc1.weight": fc1, "mlp.fc2.weight": take(f"{dense}.wo.weight")}


def _layer(take: _Reader, stack: str, i: int, decoder: bool, gated: bool) -> dict[str, Tensor]:
    """One layer's tensors under archlab's names (relative to ``{stack}.layers.{i}``)."""
    hf = f"{stack}.block.{i}.layer"
    attn = f"{hf}.0.SelfAttention"
    out = {
        "norm1.weight": take(f"{hf}.0.layer_norm.weight"),
        "attention.qkv.weight": torch.cat([take(f"{attn}.{p}.weight") for p in ("q", "k", "v")]),
        "attention.out.weight": take(f"{attn}.o.weight"),
    }
    if decoder:
        cross = f"{hf}.1.EncDecAttention"
        out |= {
            "norm_cross.weight": take(f"{hf}.1.layer_norm.weight"),
            "cross_attention.q.weight": take(f"{cross}.q.weight"),
            "cross_attention.kv.weight": torch.cat(
                [take(f"{cross}.k.weight"), take(f"{cross}.v.weight")]
            ),
            "cross_attention.out.weight": take(f"{cross}.o.weight"),
        }
    ff = f"{hf}.{2 if decoder else 1}"
    out["norm2.weight"] = take(f"{ff}.layer_norm.weight")
    out |= _mlp(take, ff, gated)
    return out


def _stack(take: _Reader, stack: str, depth: int, gated: bool) -> dict[str, Tensor]:
    """A stack's layers, its relative bias table (HF keeps it in layer 0) and final norm."""
    decoder = stack == "decoder"
    out: dict[str, Tensor] = {}
    for i in range(depth):
        for name, tensor in _layer(take, stack, i, decoder, gated).items():
            out[f"{stack}.layers.{i}.{name}"] = tensor
    # HF: (buckets, heads) as an Embedding, the layout of archlab's table
    table = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    out[f"{stack}.relative_bias.weight"] = take(table)
    out[f"{'dec' if decoder else 'enc'}_norm.weight"] = take(f"{stack}.final_layer_norm.weight")
    return out


def weights(state: StateDict, config: Config, architecture: str) -> dict[str, Tensor]:
    """archlab's state dict for ``spec(config, architecture)`` from a T5 state dict."""
    take = _Reader(state)
    gated = _activation(config) in ("geglu_tanh", "swiglu")
    depth = int(config["num_layers"])
    decoder_depth = int(config.get("num_decoder_layers") or depth)
    shared = take("shared.weight", "encoder.embed_tokens.weight")
    out: dict[str, Tensor] = {"shared.weight": shared, "tgt_tok.weight": shared}
    out |= _stack(take, "encoder", depth, gated)
    out |= _stack(take, "decoder", decoder_depth, gated)
    tied = bool(config.get("tie_word_embeddings", True))
    out["lm_head.weight"] = shared if tied else take("lm_head.weight")
    unused = take.unused()
    if unused:
        listed = ", ".join(unused[:8]) + (
            f", ... ({len(unused)} in all)" if len(unused) > 8 else ""
        )
        raise ConversionError(
            f"T5 checkpoint holds tensors its config does not account for: {listed}"
        )
    return out


# ------------------------------------------------------------------------------------ export

#: archlab's MLP activation -> the ``feed_forward_proj`` an export writes.
FEED_FORWARD = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_tanh": "gelu_new",
    "silu": "silu",
    "geglu_tanh": "gated-gelu",
    "swiglu": "gated-silu",
}


@dataclass(frozen=True)
class _Layout:
    """The node ids of a spec of T5's shape, and its two inputs."""

    src: str
    tgt: str
    shared: str
    encoder: str
    enc_norm: str
    tgt_tok: str
    decoder: str
    dec_norm: str
    lm_head: str


def _skip_dropout(nodes: dict[str, Any], node_id: Any) -> Any:
    while isinstance(node_id, str) and nodes.get(node_id, {}).get("op") == "dropout":
        node_id = nodes[node_id]["input"]
    return node_id


def _walk(
    nodes: dict[str, Any], start: Any, ops: tuple[str, ...], problems: list[str]
) -> list[str]:
    """The nodes from ``start`` back through their inputs, which must have ``ops`` in turn; then
    the input they start from. Empty (with a problem) where the chain differs."""
    chain, current = [], _skip_dropout(nodes, start)
    for op in ops:
        node = nodes.get(current)
        if node is None or node["op"] != op:
            found = describe_node(node) if node is not None else f"input {current!r}"
            problems.append(f"nodes.{current}: {found} where T5 has op {op!r}")
            return []
        chain.append(current)
        current = _skip_dropout(nodes, node["input"])
    return [*chain, current]


def _layout(doc: dict[str, Any], problems: list[str]) -> _Layout | None:
    """T5's nodes: src -> embed -> encoder -> norm, the decoder's memory; tgt -> embed (tied to
    the first) -> decoder -> norm -> lm_head. What else the spec holds goes to ``problems``."""
    nodes = doc["nodes"]
    if len(doc["outputs"]) != 1:
        problems.append(f"outputs: {len(doc['outputs'])} outputs; a T5 model has one")
        return None
    target = _walk(nodes, doc["outputs"][0], ("lm_head", "norm", "decoder", "embed"), problems)
    if not target:
        return None
    head, dec_norm, decoder, tgt_tok, tgt = target
    if nodes[decoder].get("memory") is None:
        problems.append(f"nodes.{decoder}.memory: None; T5's decoder attends to its encoder")
        return None
    source = _walk(nodes, nodes[decoder].get("memory"), ("norm", "encoder", "embed"), problems)
    if not source:
        return None
    enc_norm, encoder, shared, src = source
    layout = _Layout(src, tgt, shared, encoder, enc_norm, tgt_tok, decoder, dec_norm, head)
    used = set(vars(layout).values())
    for node_id, node in nodes.items():
        if node_id not in used and node["op"] != "dropout":
            problems.append(f"nodes.{node_id}: {describe_node(node)} has no counterpart in T5")
    inputs = doc["inputs"]
    if (
        len(inputs) != 2
        or src == tgt
        or any(inputs.get(i, {}).get("kind") != "tokens" for i in (src, tgt))
    ):
        problems.append("inputs: a T5 model has two inputs, source and target token ids")
    if nodes[tgt_tok]["tie"] != shared:
        problems.append(
            f"nodes.{tgt_tok}.tie: {nodes[tgt_tok]['tie']!r}; T5's target embedding is its "
            f"source embedding ({shared!r})"
        )
    return layout


def _head_problems(doc: dict[str, Any], layout: _Layout) -> list[str]:
    """What in the head T5 cannot express: a rescale other than a tied head's d_model**-0.5."""
    nodes = doc["nodes"]
    head, d_model = nodes[layout.lm_head], int(nodes[layout.shared]["dim"])
    tied, scale = head["tie"] is not None, head.get("scale")
    out = []
    if head["tie"] not in (None, layout.tgt_tok, layout.shared):
        out.append(f"nodes.{layout.lm_head}.tie: {head['tie']!r}; T5 ties to its embedding")
    if scale is not None and not (tied and abs(scale - d_model**-0.5) <= 1e-12 * scale):
        out.append(
            f"nodes.{layout.lm_head}.scale: {scale!r}; T5 rescales only a tied head, by "
            f"d_model**-0.5 ({d_model**-0.5!r})"
        )
    vocab = doc["inputs"][layout.src]["vocab_size"]
    if head["vocab_size"] != vocab:
        out.append(
            f"nodes.{layout.lm_head}.vocab_size: {head['vocab_size']!r}, the input's {vocab!r}; "
            "T5's head predicts its input vocabulary"
        )
    return out


def _config(doc: dict[str, Any], layout: _Layout) -> dict[str, Any]:
    """The ``T5ForConditionalGeneration`` config of a spec of T5's shape."""
    nodes = doc["nodes"]
    encoder, head = nodes[layout.encoder], nodes[layout.lm_head]
    block, attention = encoder["block"], encoder["block"]["attention"]
    position = attention["position"] or {}
    rescaled = head.get("scale") is not None
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": doc["inputs"][layout.src]["vocab_size"],
        "n_positions": doc["inputs"][layout.src]["max_len"],
        "d_model": nodes[layout.shared]["dim"],
        "d_kv": attention["head_dim"],
        "d_ff": block["mlp"]["hidden"],
        "num_layers": encoder["depth"],
        "num_decoder_layers": nodes[layout.decoder]["depth"],
        "num_heads": attention["heads"],
        "relative_attention_num_buckets": position.get("buckets", 32),
        "relative_attention_max_distance": position.get("max_distance", 128),
        "dropout_rate": attention["dropout"],
        "layer_norm_epsilon": block["norm"]["eps"],
        "feed_forward_proj": FEED_FORWARD.get(block["mlp"]["activation"], "relu"),
        "is_encoder_decoder": True,
        "tie_word_embeddings": rescaled,
        "scale_decoder_outputs": rescaled,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
    }


def _round_trip_problems(doc: dict[str, Any], layout: _Layout) -> list[str]:
    """What differs between the spec and the one its T5 config converts back to (node ids,
    wiring, dropout and the head's tie and rescale, checked above, aside)."""
    back = training_only(canonical_form(spec(_config(doc, layout), FAMILY.architectures[0])))
    ours = training_only(doc)
    wiring = {"input", "memory", "tie", "scale", "vocab_size"}
    problems = []
    for role, node_id in vars(layout).items():
        if role in ("src", "tgt"):
            pairs = [(ours["inputs"][node_id], back["inputs"][role], f"inputs.{node_id}")]
        else:
            mine = {k: v for k, v in ours["nodes"][node_id].items() if k not in wiring}
            theirs = {k: v for k, v in back["nodes"][role].items() if k not in wiring}
            pairs = [(mine, theirs, f"nodes.{node_id}")]
        for a, b, path in pairs:
            for where, value, wanted in differences(a, b, path):
                problems.append(f"{where}: {value!r}; T5 has {wanted!r}")
    return problems


def export_problems(model_spec: Spec) -> list[str]:
    """What in ``model_spec`` T5 cannot express (empty: it exports exactly)."""
    doc = canonical_form(model_spec)
    problems: list[str] = []
    layout = _layout(doc, problems)
    if layout is None:
        return problems
    problems += _head_problems(doc, layout)
    for stack in (layout.encoder, layout.decoder):
        block = doc["nodes"][stack]["block"]
        activation = block["mlp"]["activation"]
        if activation not in FEED_FORWARD:
            known = ", ".join(repr(a) for a in FEED_FORWARD)
            problems.append(f"nodes.{stack}.block.mlp.activation: {activation!r}; T5 has {known}")
        position = block["attention"]["position"] or {"kind": None}
        if position["kind"] != "relative_bias":
            problems.append(
                f"nodes.{stack}.block.attention.position: {block['attention']['position']!r}; "
                "T5 has 'relative_bias'"
            )
    return problems or _round_trip_problems(doc, layout)


def _export_layer(
    state: StateDict, prefix: str, hf: str, inner: int, gated: bool, decoder: bool
) -> dict[str, Tensor]:
    """One layer's tensors under T5's names: ``qkv`` split in q, k, v; ``kv`` in k, v; a gated
    ``fc1`` in ``wi_1`` (value) and ``wi_0`` (gate)."""
    attn, qkv = f"{hf}layer.0.SelfAttention.", state[f"{prefix}attention.qkv.weight"]
    out = {f"{hf}layer.0.layer_norm.weight": state[f"{prefix}norm1.weight"]}
    for k, name in enumerate("qkv"):
        out[f"{attn}{name}.weight"] = qkv[k * inner : (k + 1) * inner]
    out[f"{attn}o.weight"] = state[f"{prefix}attention.out.weight"]
    if decoder:
        cross, kv = f"{hf}layer.1.EncDecAttention.", state[f"{prefix}cross_attention.kv.weight"]
        out[f"{hf}layer.1.layer_norm.weight"] = state[f"{prefix}norm_cross.weight"]
        out[f"{cross}q.weight"] = state[f"{prefix}cross_attention.q.weight"]
        out[f"{cross}k.weight"], out[f"{cross}v.weight"] = kv[:inner], kv[inner:]
        out[f"{cross}o.weight"] = state[f"{prefix}cross_attention.out.weight"]
    ff = f"{hf}layer.{2 if decoder else 1}."
    out[f"{ff}layer_norm.weight"] = state[f"{prefix}norm2.weight"]
    fc1, dense = state[f"{prefix}mlp.fc1.weight"], f"{ff}DenseReluDense."
    if gated:
        half = fc1.shape[0] // 2
        out[f"{dense}wi_1.weight"], out[f"{dense}wi_0.weight"] = fc1[:half], fc1[half:]
    else:
        out[f"{dense}wi.weight"] = fc1
    out[f"{dense}wo.weight"] = state[f"{prefix}mlp.fc2.weight"]
    return out


def export(model_spec: Spec, state: StateDict) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The ``T5ForConditionalGeneration`` config and state dict of ``model_spec``'s model, from
    archlab's state dict; each tensor its own contiguous CPU copy."""
    problems = export_problems(model_spec)
    if problems:
        raise ConversionError("the spec cannot be exported to T5: " + "; ".join(problems))
    doc = canonical_form(model_spec)
    layout = _layout(doc, problems)
    assert layout is not None
    config = _config(doc, layout)
    inner, gated = config["num_heads"] * config["d_kv"], "gated" in config["feed_forward_proj"]
    out = {"shared.weight": state[f"{layout.shared}.weight"]}
    for stack, node_id, norm in (
        ("encoder", layout.encoder, layout.enc_norm),
        ("decoder", layout.decoder, layout.dec_norm),
    ):
        for i in range(int(doc["nodes"][node_id]["depth"])):
            out |= _export_layer(
                state,
                f"{node_id}.layers.{i}.",
                f"{stack}.block.{i}.",
                inner,
                gated,
                stack == "decoder",
            )
        table = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        out[table] = state[f"{node_id}.relative_bias.weight"]
        out[f"{stack}.final_layer_norm.weight"] = state[f"{norm}.weight"]
    if not config["tie_word_embeddings"]:
        out["lm_head.weight"] = state[f"{layout.lm_head}.weight"]
    dtype = str(out["shared.weight"].dtype).removeprefix("torch.")
    tensors = cpu_copies(out)
    return {**config, "torch_dtype": dtype}, tensors


FAMILY = register(
    Family(
        "T5",
        ("t5",),
        ("T5ForConditionalGeneration",),
        spec,
        weights,
        export_problems,
        export,
    )
)

__all__ = ["ACTIVATIONS", "FAMILY", "FEED_FORWARD", "export", "export_problems", "spec", "weights"]
