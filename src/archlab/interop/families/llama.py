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

Export goes the other way for any spec of that shape, whatever its node names: a token input, an
``embed``, a ``decoder`` of pre-RMSNorm blocks with causal rotary softmax attention (one bias
setting for q, k, v and o) and a SwiGLU MLP, a final RMSNorm of the blocks' eps, and an
``lm_head`` (tied or not; ``LlamaForCausalLM``) or none (``LlamaModel``). Dropout acts only in
training: the attention's becomes ``attention_dropout``, the others are not carried. The spec
holds no special tokens, so ``bos_token_id`` / ``eos_token_id`` are left unset.
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
from archlab.interop.families.exporting import (
    chain_to_output,
    cpu_copies,
    describe_node,
    renamed_differences,
    training_only,
)
from archlab.specs import canonical_form
from archlab.specs.models import Spec

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


# ------------------------------------------------------------------------------------ export


@dataclass(frozen=True)
class _Layout:
    """The node ids of a spec that has Llama's shape (``head`` None: a bare ``LlamaModel``)."""

    input: str
    embed: str
    decoder: str
    norm: str | None
    head: str | None


def _path_to_output(doc: dict[str, Any], problems: list[str]) -> tuple[str, list[str]] | None:
    """The input and the node ids from it to the single output, dropout nodes left out (they act
    only in training)."""
    found = chain_to_output(doc, problems, "Llama")
    if found is None:
        return None
    source, path = found
    return source, [n for n in path if doc["nodes"][n]["op"] != "dropout"]


def _chain(doc: dict[str, Any], problems: list[str]) -> _Layout | None:
    """Llama's nodes in order: token input -> embed -> decoder -> norm [-> lm_head]; whatever
    else the spec holds is a problem."""
    found = _path_to_output(doc, problems)
    if found is None:
        return None
    name, seq = found
    nodes = doc["nodes"]
    ops = [nodes[n]["op"] for n in seq]
    if (
        ops.count("embed") != 1
        or ops.count("decoder") != 1
        or ops.index("embed") > ops.index("decoder")
    ):
        problems.append("nodes: Llama is one token embedding followed by one decoder stack")
        return None
    embed_at, decoder_at = ops.index("embed"), ops.index("decoder")
    extra = seq[:embed_at] + seq[embed_at + 1 : decoder_at]
    tail = seq[decoder_at + 1 :]
    norm = tail.pop(0) if tail and ops[decoder_at + 1] == "norm" else None
    if norm is None:
        problems.append(f"nodes.{seq[decoder_at]}: Llama ends its layers with an RMSNorm node")
    head = tail.pop(0) if tail and nodes[tail[0]]["op"] == "lm_head" else None
    on_path = {*seq[: decoder_at + 1], norm, head}
    extra += tail + [n for n in nodes if n not in on_path and nodes[n]["op"] != "dropout"]
    for node_id in extra:
        problems.append(
            f"nodes.{node_id}: {describe_node(nodes[node_id])} has no counterpart in Llama"
        )
    if len(doc["inputs"]) != 1 or doc["inputs"].get(name, {}).get("kind") != "tokens":
        problems.append("inputs: a Llama model has exactly one input, of token ids")
    return _Layout(name, seq[embed_at], seq[decoder_at], norm, head)


def _block_problems(decoder: dict[str, Any], where: str) -> list[str]:
    """What in a decoder node Llama's layers cannot express."""
    block, out = decoder["block"], []
    attention, mlp, norm = block["attention"], block["mlp"], block["norm"]
    expected = [
        ("attention.kind", attention["kind"], "softmax"),
        ("attention.mask", attention["mask"], {"kind": "causal"}),
        ("attention.position.kind", (attention["position"] or {}).get("kind"), "rotary"),
        ("attention.qk_norm", attention["qk_norm"], False),
        ("mlp.activation", mlp["activation"], "swiglu"),
        ("norm.kind", norm["kind"], "rmsnorm"),
        ("norm.placement", norm["placement"], "pre"),
        ("layer_scale", block["layer_scale"], None),
        ("cross_attention", "present" if block["cross_attention"] else None, None),
    ]
    for path, value, wanted in expected:
        if value != wanted:
            out.append(f"{where}.block.{path}: {value!r}; Llama has {wanted!r}")
    position = attention["position"] or {"kind": None}
    if position["kind"] == "rotary" and position.get("fraction", 1.0) != 1.0:
        out.append(
            f"{where}.block.attention.position.fraction: {position['fraction']!r}; Llama rotates "
            "every channel (1.0)"
        )
    if decoder.get("memory") is not None:
        out.append(f"{where}.memory: {decoder['memory']!r}; Llama has no cross-attention")
    if decoder.get("overrides"):
        out.append(f"{where}.overrides: Llama's layers are all alike")
    return out


def export_problems(model_spec: Spec) -> list[str]:
    """What in ``model_spec`` Llama cannot express (empty: it exports exactly)."""
    doc = canonical_form(model_spec)
    problems: list[str] = []
    layout = _chain(doc, problems)
    if layout is None:
        return problems
    nodes = doc["nodes"]
    token_input = doc["inputs"].get(layout.input, {})
    if token_input.get("pad_id") is not None:
        problems.append(
            f"inputs.{layout.input}.pad_id: {token_input['pad_id']!r}; archlab masks those "
            "tokens itself, Llama only through attention_mask (leave pad_id out)"
        )
    embed = nodes[layout.embed]
    if embed["scale"]:
        problems.append(f"nodes.{layout.embed}.scale: true; Llama does not scale its embedding")
    if embed["tie"] is not None:
        problems.append(f"nodes.{layout.embed}.tie: {embed['tie']!r}; Llama's embedding is its own")
    decoder = nodes[layout.decoder]
    problems += _block_problems(decoder, f"nodes.{layout.decoder}")
    final = nodes[layout.norm] if layout.norm is not None else {"kind": "rmsnorm", "eps": None}
    block_norm = decoder["block"]["norm"]
    if final["kind"] != "rmsnorm":
        problems.append(f"nodes.{layout.norm}.kind: {final['kind']!r}; Llama has 'rmsnorm'")
    elif layout.norm and block_norm["kind"] == "rmsnorm" and final["eps"] != block_norm["eps"]:
        problems.append(
            f"nodes.{layout.norm}.eps: {final['eps']!r}, the blocks' {block_norm['eps']!r}; "
            "Llama has one rms_norm_eps"
        )
    if layout.head is not None:
        head = nodes[layout.head]
        if head["tie"] not in (None, layout.embed):
            problems.append(
                f"nodes.{layout.head}.tie: {head['tie']!r}; Llama ties to the embedding"
            )
        vocab = token_input.get("vocab_size")
        if head["vocab_size"] != vocab:
            problems.append(
                f"nodes.{layout.head}.vocab_size: {head['vocab_size']!r}, the input's {vocab!r}; "
                "Llama's head predicts its input vocabulary"
            )
    return problems or _round_trip_problems(doc, layout)


def _dims_of(doc: dict[str, Any], layout: _Layout) -> tuple[LlamaDims, float]:
    """The Llama sizes of a canonical spec of Llama's shape, and its attention dropout."""
    nodes, token_input = doc["nodes"], doc["inputs"][layout.input]
    decoder = nodes[layout.decoder]
    attention, mlp = decoder["block"]["attention"], decoder["block"]["mlp"]
    head = nodes[layout.head] if layout.head is not None else None
    d = LlamaDims(
        vocab=int(token_input["vocab_size"]),
        dim=int(nodes[layout.embed]["dim"]),
        hidden=int(mlp["hidden"]),
        depth=int(decoder["depth"]),
        heads=int(attention["heads"]),
        kv_heads=int(attention["kv_heads"]),
        head_dim=int(attention["head_dim"]),
        max_len=int(token_input["max_len"]),
        eps=float(decoder["block"]["norm"]["eps"]),
        theta=float(attention["position"]["base"]),
        tied=head is not None and head["tie"] is not None,
        attention_bias=bool(attention["bias"]),
        mlp_bias=bool(mlp["bias"]),
    )
    return d, float(attention["dropout"])


def _export_dims(model_spec: Spec) -> tuple[_Layout, LlamaDims, float]:
    """The layout and sizes of an exportable spec, and its attention dropout."""
    problems = export_problems(model_spec)
    if problems:
        raise ConversionError("the spec cannot be exported to Llama: " + "; ".join(problems))
    doc = canonical_form(model_spec)
    layout = _chain(doc, problems)
    assert layout is not None and layout.norm is not None
    return (layout, *_dims_of(doc, layout))


def _round_trip_problems(doc: dict[str, Any], layout: _Layout) -> list[str]:
    """What differs between the spec and the one its Llama config converts back to (node ids
    and dropout aside): a part of the spec the checks above do not know (a newer field) is
    refused rather than silently dropped."""
    assert layout.norm is not None
    d, _ = _dims_of(doc, layout)
    architecture = "LlamaForCausalLM" if layout.head is not None else "LlamaModel"
    config = _export_config(d, architecture, 0.0, "float32")
    back = training_only(canonical_form(spec(config, architecture)))
    roles = [(layout.embed, "tok"), (layout.decoder, "decoder"), (layout.norm, "norm")]
    roles += [(layout.head, "lm_head")] if layout.head is not None else []
    inputs = {"tok": "ids", "decoder": "tok", "norm": "decoder", "lm_head": "norm"}
    ours = training_only(doc)
    nodes = {old: (new, {"input": inputs[new]}) for old, new in roles}
    if layout.head is not None and ours["nodes"][layout.head].get("tie") == layout.embed:
        nodes[layout.head][1]["tie"] = "tok"
    return renamed_differences(ours, back, nodes, {layout.input: "ids"}, "Llama")


def _export_config(d: LlamaDims, architecture: str, dropout: float, dtype: str) -> dict[str, Any]:
    return {
        "architectures": [architecture],
        "model_type": "llama",
        "vocab_size": d.vocab,
        "hidden_size": d.dim,
        "intermediate_size": d.hidden,
        "num_hidden_layers": d.depth,
        "num_attention_heads": d.heads,
        "num_key_value_heads": d.kv_heads,
        "head_dim": d.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": d.max_len,
        "rms_norm_eps": d.eps,
        "rope_theta": d.theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": d.theta},
        "tie_word_embeddings": d.tied,
        "attention_bias": d.attention_bias,
        "attention_dropout": dropout,
        "mlp_bias": d.mlp_bias,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
        "torch_dtype": dtype,
    }


def _export_layer(state: StateDict, d: LlamaDims, prefix: str, hf: str) -> dict[str, Tensor]:
    """One layer's tensors under Llama's names: ``qkv`` split in q, k, v; ``fc1`` in up, gate."""
    q, kv, F = d.heads * d.head_dim, d.kv_heads * d.head_dim, d.hidden
    out: dict[str, Tensor] = {}
    for kind in ("weight", "bias") if d.attention_bias else ("weight",):
        qkv = state[f"{prefix}attention.qkv.{kind}"]
        out[f"{hf}self_attn.q_proj.{kind}"] = qkv[:q]
        out[f"{hf}self_attn.k_proj.{kind}"] = qkv[q : q + kv]
        out[f"{hf}self_attn.v_proj.{kind}"] = qkv[q + kv :]
        out[f"{hf}self_attn.o_proj.{kind}"] = state[f"{prefix}attention.out.{kind}"]
    for kind in ("weight", "bias") if d.mlp_bias else ("weight",):
        fc1 = state[f"{prefix}mlp.fc1.{kind}"]
        out[f"{hf}mlp.up_proj.{kind}"] = fc1[:F]
        out[f"{hf}mlp.gate_proj.{kind}"] = fc1[F:]
        out[f"{hf}mlp.down_proj.{kind}"] = state[f"{prefix}mlp.fc2.{kind}"]
    out[f"{hf}input_layernorm.weight"] = state[f"{prefix}norm1.weight"]
    out[f"{hf}post_attention_layernorm.weight"] = state[f"{prefix}norm2.weight"]
    return out


def export(model_spec: Spec, state: StateDict) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The ``LlamaForCausalLM`` (a spec with an ``lm_head``) or ``LlamaModel`` config and state
    dict of ``model_spec``'s model, from archlab's state dict; each tensor its own contiguous
    CPU copy (a tied head is left out: ``tie_word_embeddings`` says so)."""
    layout, d, dropout = _export_dims(model_spec)
    architecture = "LlamaForCausalLM" if layout.head is not None else "LlamaModel"
    base = "model." if layout.head is not None else ""
    out = {f"{base}embed_tokens.weight": state[f"{layout.embed}.weight"]}
    for i in range(d.depth):
        out.update(_export_layer(state, d, f"{layout.decoder}.layers.{i}.", f"{base}layers.{i}."))
    out[f"{base}norm.weight"] = state[f"{layout.norm}.weight"]
    if layout.head is not None and not d.tied:
        out["lm_head.weight"] = state[f"{layout.head}.weight"]
    dtype = str(out[f"{base}embed_tokens.weight"].dtype).removeprefix("torch.")
    tensors = cpu_copies(out)
    return _export_config(d, architecture, dropout, dtype), tensors


FAMILY = register(
    Family(
        "Llama",
        ("llama",),
        ("LlamaForCausalLM", "LlamaModel"),
        spec,
        weights,
        export_problems,
        export,
    )
)
