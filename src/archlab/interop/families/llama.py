"""Llama (Hugging Face ``LlamaForCausalLM`` and ``LlamaModel``) as an archlab decoder.

A Llama layer is a pre-norm block with RMSNorm, grouped-query attention with rotary positions and
a SwiGLU MLP, none of it biased unless ``attention_bias`` / ``mlp_bias`` say so; the stack ends in
a final RMSNorm and, for ``LlamaForCausalLM``, an ``lm_head`` (tied to the embedding when
``tie_word_embeddings``). Everything maps onto the spec language as it is:

- HF's ``q_proj``, ``k_proj`` and ``v_proj`` stack into archlab's fused ``attention.qkv``
  (queries, then keys, then values, each head-major: the same row order HF's projections use);
- HF rotates with ``rotate_half``, channel c with channel c + E/2 of each head, which is archlab's
  rotary layout, so query and key rows are copied without a permutation (HF's conversion script
  already permuted Meta's interleaved pairs into this layout);
- HF computes ``down(silu(gate(x)) * up(x))``; archlab's SwiGLU ``mlp.fc1`` holds the value half
  first and the gate half second, so it is ``up_proj`` stacked on ``gate_proj``.

Rotary scaling (``rope_type`` other than ``default``: linear, dynamic, yarn, longrope, llama3)
changes the angles in ways the spec's ``base`` cannot express, and is refused. Positions count
from the start of the tensor, as HF's default ``position_ids`` do, so left-padded batches agree
too. The model's input is ``ids`` (padding in ``ids_mask``); no ``pad_id`` is set, because HF
masks padding only through ``attention_mask``.
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
    register,
)

# LlamaConfig's defaults, used for keys a config.json leaves out (as transformers does).
_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
}
_DEFAULT_THETA = 10000.0
_SUPPORTED_ROPE = "default (plain RoPE with rope_theta)"
# Buffers some checkpoints carry that are not weights: archlab recomputes them.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclass(frozen=True)
class LlamaDims:
    """The sizes a Llama config fixes, with LlamaConfig's defaults filled in."""

    vocab: int
    dim: int
    hidden: int
    depth: int
    heads: int
    kv_heads: int
    head_dim: int
    max_len: int
    eps: float
    theta: float
    tied: bool
    attention_bias: bool
    mlp_bias: bool

    @property
    def explicit_head_dim(self) -> bool:
        """Whether the spec must write ``head_dim`` (it differs from ``dim // heads``)."""
        return self.dim % self.heads != 0 or self.head_dim != self.dim // self.heads


def _get(config: Config, key: str) -> Any:
    value = config.get(key)
    return _DEFAULTS[key] if value is None else value


def rope_theta(config: Config) -> float:
    """The rotary base of ``config``, from ``rope_parameters`` (transformers 5), ``rope_scaling``
    or a top-level ``rope_theta`` (older configs); scaled rotary is a ``ConversionError``."""
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    if not isinstance(params, dict) or not isinstance(scaling, dict):
        raise ConversionError("rope_parameters and rope_scaling must be objects in a Llama config")
    merged = {**params, **scaling}  # transformers lets rope_scaling win over rope_parameters
    kind = merged.get("rope_type", merged.get("type", "default"))
    if kind != "default":
        raise ConversionError(
            f"Llama rotary scaling {kind!r} cannot be expressed in an archlab spec; "
            f"supported: {_SUPPORTED_ROPE}"
        )
    theta = merged.get("rope_theta", config.get("rope_theta"))
    return _DEFAULT_THETA if theta is None else float(theta)


def dims(config: Config) -> LlamaDims:
    """The sizes of a Llama ``config``, checked for what archlab can reproduce exactly."""
    act = _get(config, "hidden_act")
    if act != "silu":
        raise ConversionError(f"Llama hidden_act {act!r} is not supported; supported: silu")
    dim, heads = int(_get(config, "hidden_size")), int(_get(config, "num_attention_heads"))
    kv_heads = int(config.get("num_key_value_heads") or heads)
    if kv_heads < 1 or heads % kv_heads:
        raise ConversionError(
            f"num_key_value_heads ({kv_heads}) must divide num_attention_heads ({heads})"
        )
    head_dim = config.get("head_dim")
    if head_dim is None:
        if dim % heads:
            raise ConversionError(
                f"num_attention_heads ({heads}) must divide hidden_size ({dim}) "
                "when head_dim is not given"
            )
        head_dim = dim // heads
    if int(head_dim) % 2:
        raise ConversionError(f"head_dim ({head_dim}) must be even: rotary turns channel pairs")
    return LlamaDims(
        vocab=int(_get(config, "vocab_size")),
        dim=dim,
        hidden=int(_get(config, "intermediate_size")),
        depth=int(_get(config, "num_hidden_layers")),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=int(head_dim),
        max_len=int(_get(config, "max_position_embeddings")),
        eps=float(_get(config, "rms_norm_eps")),
        theta=rope_theta(config),
        tied=bool(_get(config, "tie_word_embeddings")),
        attention_bias=bool(_get(config, "attention_bias")),
        mlp_bias=bool(_get(config, "mlp_bias")),
    )


def _check_architecture(architecture: str) -> None:
    if architecture not in FAMILY.architectures:
        raise ConversionError(
            f"Llama checkpoints of architecture {architecture!r} are not supported; "
            f"supported: {', '.join(FAMILY.architectures)}"
        )


def spec(config: Config, architecture: str) -> dict[str, Any]:
    """The spec of a Llama checkpoint: logits for ``LlamaForCausalLM``, the final-norm hidden
    state for ``LlamaModel``."""
    _check_architecture(architecture)
    d = dims(config)
    attention: dict[str, Any] = {
        "heads": d.heads,
        "kv_heads": d.kv_heads,
        "bias": d.attention_bias,
        "position": {"kind": "rotary", "base": d.theta},
    }
    if d.explicit_head_dim:
        attention["head_dim"] = d.head_dim
    nodes: dict[str, Any] = {
        "tok": {"op": "embed", "input": "ids", "dim": d.dim},
        "decoder": {
            "op": "decoder",
            "input": "tok",
            "depth": d.depth,
            "block": {
                "attention": attention,
                "mlp": {"hidden": d.hidden, "activation": "swiglu", "bias": d.mlp_bias},
                "norm": {"kind": "rmsnorm", "placement": "pre", "eps": d.eps},
            },
        },
        "norm": {"op": "norm", "input": "decoder", "kind": "rmsnorm", "eps": d.eps},
    }
    output, head_note = "norm", ""
    if architecture == "LlamaForCausalLM":
        head: dict[str, Any] = {"op": "lm_head", "input": "norm"}
        head.update({"tie": "tok"} if d.tied else {"vocab_size": d.vocab})
        nodes["lm_head"] = head
        output, head_note = "lm_head", f", lm_head {'tied' if d.tied else 'untied'}"
    return {
        "version": 1,
        "name": f"llama-{architecture}",
        "description": (
            f"Converted from a Hugging Face {architecture} checkpoint (model_type llama): "
            f"{d.depth} layers, width {d.dim}, {d.heads} heads of {d.head_dim} channels sharing "
            f"{d.kv_heads} key/value heads, rotary base {d.theta:g}, SwiGLU hidden {d.hidden}, "
            f"RMSNorm eps {d.eps:g}{head_note}."
        ),
        "inputs": {"ids": {"kind": "tokens", "vocab_size": d.vocab, "max_len": d.max_len}},
        "nodes": nodes,
        "outputs": output,
    }


class _Source:
    """The checkpoint's tensors under their Llama names (``model.`` prefix dropped), taken one by
    one with their shapes checked; what is never taken is reported."""

    def __init__(self, state: StateDict) -> None:
        prefixed = any(name.startswith("model.") for name in state)
        self.tensors: dict[str, Tensor] = {}
        for name, tensor in state.items():
            short = name.removeprefix("model.") if prefixed else name
            if not short.endswith(_IGNORED_SUFFIXES):
                self.tensors[short] = tensor
        self.used: set[str] = set()

    def take(self, name: str, shape: tuple[int, ...]) -> Tensor:
        tensor = self.tensors.get(name)
        if tensor is None:
            raise ConversionError(f"the Llama checkpoint has no tensor {name!r}")
        if tuple(tensor.shape) != shape:
            raise ConversionError(
                f"tensor {name!r} has shape {tuple(tensor.shape)}, but the config implies {shape}"
            )
        self.used.add(name)
        return tensor

    def skip(self, name: str) -> None:
        """Mark ``name`` as known but unused (a tied head's copy of the embedding)."""
        self.used.add(name)

    def check_all_used(self) -> None:
        left = sorted(set(self.tensors) - self.used)
        if left:
            shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
            raise ConversionError(
                f"the Llama checkpoint has tensors its config does not account for: {shown}"
            )


def _layer(source: _Source, d: LlamaDims, i: int) -> dict[str, Tensor]:
    """Layer ``i``'s tensors under archlab's names."""
    D, H, K, E, F = d.dim, d.heads, d.kv_heads, d.head_dim, d.hidden
    hf, al = f"layers.{i}.", f"decoder.layers.{i}."
    attn, mlp = hf + "self_attn.", hf + "mlp."
    out = {
        al + "attention.qkv.weight": torch.cat(
            [
                source.take(attn + "q_proj.weight", (H * E, D)),
                source.take(attn + "k_proj.weight", (K * E, D)),
                source.take(attn + "v_proj.weight", (K * E, D)),
            ]
        ),
        al + "attention.out.weight": source.take(attn + "o_proj.weight", (D, H * E)),
        al + "norm1.weight": source.take(hf + "input_layernorm.weight", (D,)),
        al + "norm2.weight": source.take(hf + "post_attention_layernorm.weight", (D,)),
        al + "mlp.fc1.weight": torch.cat(
            [
                source.take(mlp + "up_proj.weight", (F, D)),
                source.take(mlp + "gate_proj.weight", (F, D)),
            ]
        ),
        al + "mlp.fc2.weight": source.take(mlp + "down_proj.weight", (D, F)),
    }
    if d.attention_bias:
        out[al + "attention.qkv.bias"] = torch.cat(
            [
                source.take(attn + "q_proj.bias", (H * E,)),
                source.take(attn + "k_proj.bias", (K * E,)),
                source.take(attn + "v_proj.bias", (K * E,)),
            ]
        )
        out[al + "attention.out.bias"] = source.take(attn + "o_proj.bias", (D,))
    if d.mlp_bias:
        out[al + "mlp.fc1.bias"] = torch.cat(
            [source.take(mlp + "up_proj.bias", (F,)), source.take(mlp + "gate_proj.bias", (F,))]
        )
        out[al + "mlp.fc2.bias"] = source.take(mlp + "down_proj.bias", (D,))
    return out


def weights(state: StateDict, config: Config, architecture: str) -> dict[str, Tensor]:
    """archlab's state dict for :func:`spec`'s model, from a Llama checkpoint's tensors (with or
    without the ``model.`` prefix); a missing, misshapen or unaccounted tensor is an error."""
    _check_architecture(architecture)
    d = dims(config)
    source = _Source(state)
    out = {"tok.weight": source.take("embed_tokens.weight", (d.vocab, d.dim))}
    for i in range(d.depth):
        out.update(_layer(source, d, i))
    out["norm.weight"] = source.take("norm.weight", (d.dim,))
    if architecture == "LlamaForCausalLM" and not d.tied:
        out["lm_head.weight"] = source.take("lm_head.weight", (d.vocab, d.dim))
    else:
        source.skip("lm_head.weight")  # tied (HF uses the embedding) or a bare LlamaModel
        if architecture == "LlamaForCausalLM":
            out["lm_head.weight"] = out["tok.weight"]  # the compiled model lists the tied matrix
    source.check_all_used()
    return out


FAMILY = register(Family("Llama", ("llama",), ("LlamaForCausalLM", "LlamaModel"), spec, weights))
