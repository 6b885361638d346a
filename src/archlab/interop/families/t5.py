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
"""

from __future__ import annotations

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


FAMILY = register(Family("T5", ("t5",), ("T5ForConditionalGeneration",), spec, weights))

__all__ = ["ACTIVATIONS", "FAMILY", "spec", "weights"]
