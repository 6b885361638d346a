"""GPT-2 (``GPT2Model``, ``GPT2LMHeadModel``): learned positions, pre-norm decoder, tied or untied
head.

GPT-2's projections are ``Conv1D`` modules whose weights are ``(in, out)``, the transpose of
``nn.Linear``'s; its fused ``c_attn`` lays out queries, keys, then values, each head-major, as
archlab's ``attention.qkv`` does, so a transpose is the whole conversion.

Export goes the other way for any spec of GPT-2's shape, whatever its node ids: a token input, an
``embed``, a learned ``position``, a ``decoder`` of pre-LayerNorm blocks with causal softmax
attention and biased projections, a final LayerNorm of the blocks' eps, and an ``lm_head`` (tied
or not: ``GPT2LMHeadModel``) or none (``GPT2Model``); dropout nodes may sit anywhere. The spec is
compared with the one its exported config converts back to, so every other difference is refused
by its spec path. The spec holds no special tokens: ``bos_token_id`` / ``eos_token_id`` are unset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from archlab.interop.families import (
    Config,
    ConversionError,
    Family,
    StateDict,
    register,
)
from archlab.interop.families.exporting import (
    chain_to_output,
    cpu_copies,
    describe_node,
    renamed_differences,
    training_only,
)
from archlab.specs import canonical_form
from archlab.specs.models import Spec

ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
# Buffers older checkpoints carry (the causal mask): rebuilt by archlab, never weights.
_BUFFERS = re.compile(r"(^|\.)h\.\d+\.attn\.(masked_)?bias$")


def _int(config: Config, key: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConversionError(f"config.json's {key!r} is {value!r}; a positive integer is needed")
    return value


def _sizes(config: Config) -> tuple[int, int, int, int, int, int]:
    """``(vocab, positions, width, depth, heads, inner)`` of a GPT-2 config."""
    vocab = _int(config, "vocab_size", 50257)
    positions = _int(config, "n_positions", 1024)
    width = _int(config, "n_embd", 768)
    depth = _int(config, "n_layer", 12)
    heads = _int(config, "n_head", 12)
    inner = config.get("n_inner")
    inner = 4 * width if inner is None else _int(config, "n_inner")
    if width % heads:
        raise ConversionError(f"n_embd {width} is not a multiple of n_head {heads}")
    return vocab, positions, width, depth, heads, inner


def _checked(config: Config) -> None:
    """Refuse the settings archlab's spec language does not express exactly."""
    if config.get("scale_attn_weights", True) is not True:
        raise ConversionError(
            "scale_attn_weights false (attention without the 1/sqrt(head_dim) scale) is not "
            "supported for GPT-2"
        )
    if config.get("scale_attn_by_inverse_layer_idx", False):
        raise ConversionError(
            "scale_attn_by_inverse_layer_idx (scores divided by the layer index) is not supported"
        )
    if config.get("add_cross_attention", False):
        raise ConversionError("GPT-2 with cross-attention (add_cross_attention) is not supported")
    activation = config.get("activation_function", "gelu_new")
    if activation not in ACTIVATIONS:
        raise ConversionError(
            f"activation_function {activation!r} is not supported; supported: "
            + ", ".join(ACTIVATIONS)
        )


def _dropout(config: Config, key: str) -> float:
    value = config.get(key, 0.1)
    return float(value) if isinstance(value, int | float) and 0 <= value < 1 else 0.0


def spec(config: Config, architecture: str) -> dict[str, Any]:
    """The spec of a GPT-2 config: ``ids`` in, logits (``GPT2LMHeadModel``) or the final-norm
    hidden state (``GPT2Model``) out."""
    _checked(config)
    vocab, positions, width, depth, heads, inner = _sizes(config)
    eps = float(config.get("layer_norm_epsilon", 1e-5))
    activation = ACTIVATIONS[str(config.get("activation_function", "gelu_new"))]
    residual = _dropout(config, "resid_pdrop")
    nodes: dict[str, Any] = {
        "tok": {"op": "embed", "input": "ids", "dim": width},
        "pos": {"op": "position", "input": "tok", "encoding": "learned", "max_len": positions},
        "drop": {"op": "dropout", "input": "pos", "p": _dropout(config, "embd_pdrop")},
        "decoder": {
            "op": "decoder",
            "input": "drop",
            "depth": depth,
            "block": {
                "attention": {
                    "heads": heads,
                    "bias": True,
                    "dropout": _dropout(config, "attn_pdrop"),
                },
                "mlp": {"hidden": inner, "activation": activation, "bias": True},
                "norm": {"kind": "layernorm", "placement": "pre", "eps": eps},
                "dropout": residual,
            },
        },
        "norm": {"op": "norm", "input": "decoder", "kind": "layernorm", "eps": eps},
    }
    outputs = "norm"
    if architecture == "GPT2LMHeadModel":
        head: dict[str, Any] = {"op": "lm_head", "input": "norm"}
        if config.get("tie_word_embeddings", True):
            head["tie"] = "tok"
        else:
            head["vocab_size"] = vocab
        nodes["lm_head"] = head
        outputs = "lm_head"
    return {
        "version": 1,
        "name": "gpt2",
        "description": (
            f"Imported from Hugging Face {architecture}: {depth} layers of width {width}, "
            f"{heads} heads, MLP {inner}, vocabulary {vocab}, context {positions}."
        ),
        "inputs": {"ids": {"kind": "tokens", "vocab_size": vocab, "max_len": positions}},
        "nodes": nodes,
        "outputs": outputs,
    }


class _Reader:
    """Takes tensors out of a GPT-2 state dict by name, checking their shapes; ``rest`` is what
    was never taken."""

    def __init__(self, state: StateDict) -> None:
        prefix = "transformer." if any(k.startswith("transformer.") for k in state) else ""
        self.state = {k.removeprefix(prefix): v for k, v in state.items() if not _BUFFERS.search(k)}
        self.rest = set(self.state)
        self.prefix = prefix

    def take(self, name: str, shape: tuple[int, ...], what: str) -> Tensor:
        tensor = self.state.get(name)
        if tensor is None:
            raise ConversionError(f"the checkpoint has no tensor {self.prefix + name!r} ({what})")
        if tuple(tensor.shape) != shape:
            raise ConversionError(
                f"tensor {self.prefix + name!r} has shape {list(tensor.shape)}, the config needs "
                f"{list(shape)} ({what}): the config contradicts the weights"
            )
        self.rest.discard(name)
        return tensor


def weights(state: StateDict, config: Config, architecture: str) -> dict[str, Tensor]:
    """archlab's state dict for ``spec(config, architecture)`` from a GPT-2 state dict."""
    vocab, positions, width, depth, _heads, inner = _sizes(config)
    r = _Reader(state)
    out: dict[str, Tensor] = {
        "tok.weight": r.take("wte.weight", (vocab, width), "token embedding, vocab_size x n_embd"),
        "pos.weight": r.take("wpe.weight", (positions, width), "positions, n_positions x n_embd"),
    }
    for i in range(depth):
        src, dst = f"h.{i}.", f"decoder.layers.{i}."
        vec = (width,)
        pairs = [
            ("ln_1.weight", "norm1.weight", vec, False),
            ("ln_1.bias", "norm1.bias", vec, False),
            ("attn.c_attn.weight", "attention.qkv.weight", (width, 3 * width), True),
            ("attn.c_attn.bias", "attention.qkv.bias", (3 * width,), False),
            ("attn.c_proj.weight", "attention.out.weight", (width, width), True),
            ("attn.c_proj.bias", "attention.out.bias", vec, False),
            ("ln_2.weight", "norm2.weight", vec, False),
            ("ln_2.bias", "norm2.bias", vec, False),
            ("mlp.c_fc.weight", "mlp.fc1.weight", (width, inner), True),
            ("mlp.c_fc.bias", "mlp.fc1.bias", (inner,), False),
            ("mlp.c_proj.weight", "mlp.fc2.weight", (inner, width), True),
            ("mlp.c_proj.bias", "mlp.fc2.bias", vec, False),
        ]
        for name, ours, shape, conv1d in pairs:
            tensor = r.take(src + name, shape, f"layer {i}")
            out[dst + ours] = tensor.t() if conv1d else tensor  # load_into makes it contiguous
    out["norm.weight"] = r.take("ln_f.weight", (width,), "final norm")
    out["norm.bias"] = r.take("ln_f.bias", (width,), "final norm")
    if architecture == "GPT2LMHeadModel":
        if config.get("tie_word_embeddings", True):
            r.rest.discard("lm_head.weight")  # a tied copy, when saved at all
            out["lm_head.weight"] = out["tok.weight"]
        else:
            what = "untied head; a GPT2Model names that architecture in config.json"
            out["lm_head.weight"] = r.take("lm_head.weight", (vocab, width), what)
    else:
        r.rest.discard("lm_head.weight")
    if r.rest:
        extra = sorted(k if k == "lm_head.weight" else r.prefix + k for k in r.rest)
        raise ConversionError(
            f"the checkpoint has {len(extra)} tensor(s) a {architecture} of this config does not "
            f"use ({', '.join(extra[:5])}): the config (n_layer={depth}) contradicts the weights"
        )
    return out


# ------------------------------------------------------------------------------------ export

#: archlab's MLP activation -> the ``activation_function`` an export writes.
EXPORT_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}
_ORDER = ("embed", "position", "decoder", "norm")


@dataclass(frozen=True)
class _Layout:
    """The node ids of a spec of GPT-2's shape (``head`` None: a bare ``GPT2Model``) and the
    dropout node after the positions, if any (``embd_pdrop``)."""

    input: str
    embed: str
    position: str
    decoder: str
    norm: str
    head: str | None
    embed_dropout: str | None


def _layout(doc: dict[str, Any], problems: list[str]) -> _Layout | None:
    """GPT-2's nodes in order: token input -> embed -> position -> decoder -> norm [-> lm_head],
    dropout nodes anywhere; whatever else the spec holds is a problem."""
    nodes = doc["nodes"]
    found = chain_to_output(doc, problems, "GPT-2")
    if found is None:
        return None
    current, path = found
    seq = [n for n in path if nodes[n]["op"] != "dropout"]
    head = seq.pop() if seq and nodes[seq[-1]]["op"] == "lm_head" else None
    ops = tuple(nodes[n]["op"] for n in seq)
    if ops != _ORDER:
        problems.append(
            "nodes: GPT-2 is a token embedding, learned positions, a decoder stack and a final "
            f"norm, then optionally an lm_head; this spec has {' -> '.join(ops) or 'none'}"
        )
        return None
    on_path = set(path)
    for node_id in nodes:
        if node_id not in on_path:
            problems.append(
                f"nodes.{node_id}: {describe_node(nodes[node_id])} has no counterpart in GPT-2"
            )
    if len(doc["inputs"]) != 1 or doc["inputs"].get(current, {}).get("kind") != "tokens":
        problems.append("inputs: a GPT-2 model has exactly one input, of token ids")
    between = path[path.index(seq[1]) + 1 : path.index(seq[2])]
    embed, position, decoder, norm = seq
    return _Layout(current, embed, position, decoder, norm, head, between[0] if between else None)


def _config_of(doc: dict[str, Any], layout: _Layout, problems: list[str]) -> dict[str, Any]:
    """The GPT-2 config a spec of GPT-2's shape exports with (read leniently: what does not fit
    shows up when the spec is compared with the one the config converts back to)."""
    nodes, token_input = doc["nodes"], doc["inputs"].get(layout.input, {})
    block = nodes[layout.decoder]["block"]
    activation = block["mlp"]["activation"]
    if activation not in EXPORT_ACTIVATIONS:
        problems.append(
            f"nodes.{layout.decoder}.block.mlp.activation: {activation!r}; GPT-2 has one of "
            + ", ".join(repr(a) for a in EXPORT_ACTIVATIONS)
        )
    drop = nodes[layout.embed_dropout]["p"] if layout.embed_dropout else 0.0
    head = nodes[layout.head] if layout.head is not None else None
    architecture = "GPT2LMHeadModel" if head is not None else "GPT2Model"
    return {
        "architectures": [architecture],
        "model_type": "gpt2",
        "vocab_size": token_input.get("vocab_size"),
        "n_positions": nodes[layout.position].get("max_len") or token_input.get("max_len"),
        "n_embd": nodes[layout.embed]["dim"],
        "n_layer": nodes[layout.decoder]["depth"],
        "n_head": block["attention"]["heads"],
        "n_inner": block["mlp"]["hidden"],
        "activation_function": EXPORT_ACTIVATIONS.get(activation, "gelu_new"),
        "layer_norm_epsilon": block["norm"]["eps"],
        "embd_pdrop": drop,
        "attn_pdrop": block["attention"]["dropout"],
        "resid_pdrop": block["dropout"],
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": head is not None and head["tie"] is not None,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
    }


def export_problems(model_spec: Spec) -> list[str]:
    """What in ``model_spec`` GPT-2 cannot express (empty: it exports exactly)."""
    doc = canonical_form(model_spec)
    problems: list[str] = []
    layout = _layout(doc, problems)
    if layout is None:
        return problems
    config = _config_of(doc, layout, problems)
    head = doc["nodes"][layout.head] if layout.head is not None else None
    if head is not None and head["tie"] not in (None, layout.embed):
        problems.append(f"nodes.{layout.head}.tie: {head['tie']!r}; GPT-2 ties to the embedding")
    if problems:
        return problems
    try:
        back = training_only(canonical_form(spec(config, config["architectures"][0])))
    except (ConversionError, ValueError) as exc:
        return [f"nodes.{layout.decoder}: {exc}"]
    ours = training_only(doc)
    inputs = {"tok": "ids", "pos": "tok", "decoder": "drop", "norm": "decoder", "lm_head": "norm"}
    roles = [(layout.embed, "tok"), (layout.position, "pos"), (layout.decoder, "decoder")]
    roles += [(layout.norm, "norm")] + ([(layout.head, "lm_head")] if layout.head else [])
    nodes = {old: (new, {"input": inputs[new]}) for old, new in roles}
    if layout.head is not None and ours["nodes"][layout.head].get("tie") == layout.embed:
        nodes[layout.head][1]["tie"] = "tok"
    return problems + renamed_differences(ours, back, nodes, {layout.input: "ids"}, "GPT-2")


_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def export(model_spec: Spec, state: StateDict) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The ``GPT2LMHeadModel`` (a spec with an ``lm_head``) or ``GPT2Model`` config and state
    dict of ``model_spec``'s model from archlab's state dict: the projections transposed into
    ``Conv1D``'s ``(in, out)`` layout, each tensor its own contiguous CPU copy (a tied head is
    left out: ``tie_word_embeddings`` says so)."""
    problems = export_problems(model_spec)
    if problems:
        raise ConversionError("the spec cannot be exported to GPT-2: " + "; ".join(problems))
    doc = canonical_form(model_spec)
    layout = _layout(doc, problems)
    assert layout is not None
    config = _config_of(doc, layout, problems)
    base = "transformer." if layout.head is not None else ""
    out = {
        f"{base}wte.weight": state[f"{layout.embed}.weight"],
        f"{base}wpe.weight": state[f"{layout.position}.weight"],
        f"{base}ln_f.weight": state[f"{layout.norm}.weight"],
        f"{base}ln_f.bias": state[f"{layout.norm}.bias"],
    }
    ours_of = {
        "ln_1": "norm1", "attn.c_attn": "attention.qkv", "attn.c_proj": "attention.out",
        "ln_2": "norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
    }  # fmt: skip
    for i in range(config["n_layer"]):
        for theirs, ours in ours_of.items():
            for kind in ("weight", "bias"):
                tensor = state[f"{layout.decoder}.layers.{i}.{ours}.{kind}"]
                if theirs in _CONV1D and kind == "weight":
                    tensor = tensor.t()
                out[f"{base}h.{i}.{theirs}.{kind}"] = tensor
    if layout.head is not None and not config["tie_word_embeddings"]:
        out["lm_head.weight"] = state[f"{layout.head}.weight"]
    config["torch_dtype"] = str(out[f"{base}wte.weight"].dtype).removeprefix("torch.")
    tensors = cpu_copies(out)
    return config, tensors


FAMILY = register(
    Family(
        "GPT-2",
        ("gpt2",),
        ("GPT2LMHeadModel", "GPT2Model"),
        spec,
        weights,
        export_problems,
        export,
    )
)
