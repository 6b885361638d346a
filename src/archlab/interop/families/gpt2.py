"""GPT-2 (``GPT2Model``, ``GPT2LMHeadModel``): learned positions, pre-norm decoder, tied or untied
head.

GPT-2's projections are ``Conv1D`` modules whose weights are ``(in, out)``, the transpose of
``nn.Linear``'s; its fused ``c_attn`` lays out queries, keys, then values, each head-major, as
archlab's ``attention.qkv`` does, so a transpose is the whole conversion.
"""

from __future__ import annotations

import re
from typing import Any

from torch import Tensor

from archlab.interop.families import (
    Config,
    ConversionError,
    Family,
    StateDict,
    register,
)

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
            out[dst + ours] = tensor.t().contiguous() if conv1d else tensor
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


FAMILY = register(Family("GPT-2", ("gpt2",), ("GPT2LMHeadModel", "GPT2Model"), spec, weights))
