"""Pydantic models of the archlab spec language, version 1.

The field names here are the user interface documented in ``docs/spec-reference.md``. Every model
forbids unknown keys, is frozen and is strict about JSON types, as ``docs/spec.schema.json`` is: a
string never passes as a number or a boolean, a boolean never as a number (``"depth": "2"``,
``"bias": 0``, ``"heads": true`` are errors). An integer passes where a float is expected, and a
float with no fractional part where an integer is (JSON does not tell ``2`` from ``2.0``). Shorthand values (``"rotary"``, ``"outputs": "x"``,
``"size": 8``, ``"layers": "1-3"``) are expanded while parsing, so a validated ``Spec`` only ever
holds the long forms. Checks that need more than one field's value in isolation (widths flowing
along edges, references between nodes) live in ``archlab.specs.analysis``, which runs on every
``load_spec``.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveFloat,
    StringConstraints,
    model_validator,
)

SPEC_VERSION = 1

ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
#: Upper bounds keep absurd values (``1e308``, ``10**400``) from overflowing the arithmetic of
#: shape inference; they sit far above any real model.
MAX_SIZE = 2**31 - 1
MAX_DEPTH = 4096


def _integral(value: Any) -> Any:
    """``2.0`` -> ``2``: JSON has one number type, and JSON Schema's ``integer`` admits ``2.0``."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integral = BeforeValidator(_integral)
Count = Annotated[int, Field(gt=0, le=MAX_SIZE), Integral]
Index = Annotated[int, Field(ge=0, le=MAX_SIZE), Integral]
LayerIndex = Annotated[int, Field(ge=0, lt=MAX_DEPTH), Integral]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]
Fraction = Annotated[float, Field(gt=0.0, le=1.0)]


class SpecModel(BaseModel):
    """Base of every spec model: strict about keys and JSON types, immutable once validated."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False, strict=True
    )


# --------------------------------------------------------------------------- shorthand expanders


def _kind_from_string(value: Any) -> Any:
    """``"rotary"`` -> ``{"kind": "rotary"}``; objects and null pass through."""
    return {"kind": value} if isinstance(value, str) else value


def _pair(value: Any) -> Any:
    """``8`` -> ``(8, 8)``; a JSON list ``[8, 8]`` -> ``(8, 8)`` (strict models take tuples only)."""
    value = _integral(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    return tuple(value) if isinstance(value, list) else value


def _string_to_list(value: Any) -> Any:
    """``"x"`` -> ``["x"]``."""
    return [value] if isinstance(value, str) else value


_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def _layer_list(value: Any) -> Any:
    """``"1-3"`` -> ``[1, 2, 3]`` (inclusive); ``"4"`` -> ``[4]``; lists pass through."""
    value = _integral(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, str):
        return value
    if value.strip().isdigit():
        return [int(value)]
    match = _RANGE.match(value)
    if match is None:
        raise ValueError(f"layers {value!r} is neither a list of indices nor a range 'a-b'")
    lo, hi = int(match.group(1)), int(match.group(2))
    if hi >= MAX_DEPTH:
        raise ValueError(
            f"layers range {value!r} reaches past the deepest stack archlab builds ({MAX_DEPTH})"
        )
    if lo > hi:
        raise ValueError(f"layers range {value!r} runs backwards; write '{hi}-{lo}'")
    return list(range(lo, hi + 1))


Pair = Annotated[
    tuple[Count, Count], BeforeValidator(_pair, json_schema_input_type=int | tuple[int, int])
]
LayerList = Annotated[
    list[LayerIndex],
    BeforeValidator(_layer_list, json_schema_input_type=list[int] | int | str),
    Field(min_length=1),
]

# --------------------------------------------------------------------------------------- inputs


class TokensInput(SpecModel):
    """Integer token ids ``(B, T)`` with ``T <= max_len``."""

    kind: Literal["tokens"]
    vocab_size: Count
    max_len: Count
    pad_id: Index | None = None

    @model_validator(mode="after")
    def _pad_in_vocab(self) -> TokensInput:
        if self.pad_id is not None and self.pad_id >= self.vocab_size:
            raise ValueError(
                f"pad_id {self.pad_id} is outside the vocabulary (vocab_size {self.vocab_size})"
            )
        return self


class ImageInput(SpecModel):
    """Images ``(B, C, H, W)``; ``size`` is ``[H, W]`` (an int means a square)."""

    kind: Literal["image"]
    channels: Count
    size: Pair


class FeaturesInput(SpecModel):
    """Real-valued feature sequences ``(B, T, dim)`` with ``T <= max_len``."""

    kind: Literal["features"]
    dim: Count
    max_len: Count


Input = Annotated[TokensInput | ImageInput | FeaturesInput, Field(discriminator="kind")]

# ---------------------------------------------------------------------------------------- masks


class NoMask(SpecModel):
    """Fully bidirectional attention (also inside a decoder)."""

    kind: Literal["none"]


class CausalMask(SpecModel):
    """Query i sees keys j <= i."""

    kind: Literal["causal"]


class SlidingWindowMask(SpecModel):
    """Causal: i - window < j <= i. Not causal: |i - j| < window. ``causal`` null = the stack's."""

    kind: Literal["sliding_window"]
    window: Count
    causal: bool | None = None


class PrefixMask(SpecModel):
    """Prefix-LM: the first ``prefix_len`` positions see each other fully, the rest causally."""

    kind: Literal["prefix"]
    prefix_len: Count


class BlockLocalMask(SpecModel):
    """Attention only inside consecutive blocks of ``block`` positions (causal inside if set)."""

    kind: Literal["block_local"]
    block: Count
    causal: bool | None = None


Mask = Annotated[
    NoMask | CausalMask | SlidingWindowMask | PrefixMask | BlockLocalMask,
    Field(discriminator="kind"),
]
MaskField = Annotated[
    Mask | None,
    BeforeValidator(
        _kind_from_string,
        json_schema_input_type=Literal["none", "causal"] | Mask | None,
    ),
]

# ------------------------------------------------------------------------ in-attention positions


class Rotary(SpecModel):
    """Rotary embeddings (RoPE) on the first ``fraction`` of each head's dimensions."""

    kind: Literal["rotary"]
    base: PositiveFloat = 10000.0
    fraction: Fraction = 1.0


class Alibi(SpecModel):
    """ALiBi: a per-head linear distance penalty added to the scores (Press et al. 2022)."""

    kind: Literal["alibi"]


class RelativeBias(SpecModel):
    """T5 relative position buckets; one table shared by the stack's layers that use it."""

    kind: Literal["relative_bias"]
    buckets: Count = 32
    max_distance: Count = 128


Position = Annotated[Rotary | Alibi | RelativeBias, Field(discriminator="kind")]
PositionField = Annotated[
    Position | None,
    BeforeValidator(
        _kind_from_string,
        json_schema_input_type=Literal["rotary", "alibi", "relative_bias"] | Position | None,
    ),
]

# ------------------------------------------------------------------------------------ attention


class Attention(SpecModel):
    """Multi-head attention of a block (softmax or kernelised linear)."""

    kind: Literal["softmax", "linear"] = "softmax"
    heads: Count
    kv_heads: Count | None = None
    head_dim: Count | None = None
    mask: MaskField = None
    position: PositionField = None
    dropout: Probability = 0.0
    bias: bool = True
    qk_norm: bool = False
    feature_map: Literal["elu", "relu"] = "elu"
    scale: PositiveFloat | None = None


class CrossAttention(SpecModel):
    """Cross-attention of a decoder block with ``memory``; unset fields come from ``attention``."""

    kind: Literal["softmax", "linear"] | None = None
    heads: Count | None = None
    kv_heads: Count | None = None
    head_dim: Count | None = None
    mask: MaskField = None
    position: PositionField = None
    dropout: Probability | None = None
    bias: bool | None = None
    qk_norm: bool | None = None
    feature_map: Literal["elu", "relu"] | None = None
    scale: PositiveFloat | None = None


Activation = Literal["gelu", "gelu_tanh", "relu", "silu", "swiglu", "geglu", "geglu_tanh"]
#: the GLU variants: the MLP's first projection outputs value and gate, 2 x hidden
GATED_ACTIVATIONS = ("swiglu", "geglu", "geglu_tanh")


class Mlp(SpecModel):
    """The feed-forward branch. ``hidden`` is the inner width (after gating for GLU variants)."""

    ratio: Annotated[float, Field(gt=0, le=1024)] = 4.0
    hidden: Count | None = None
    activation: Activation = "gelu"
    bias: bool = True
    dropout: Probability = 0.0


NormKind = Literal["layernorm", "rmsnorm"]


class BlockNorm(SpecModel):
    """Normalisation inside a block and where it sits (``pre`` or ``post`` the residual add)."""

    kind: NormKind = "layernorm"
    placement: Literal["pre", "post"] = "pre"
    eps: PositiveFloat = 1e-6


class Block(SpecModel):
    """One transformer layer: attention, optional cross-attention, MLP, norms, residuals."""

    attention: Attention
    cross_attention: CrossAttention | None = None
    mlp: Mlp = Mlp()
    norm: BlockNorm = BlockNorm()
    dropout: Probability = 0.0
    drop_path: Probability = 0.0
    layer_scale: PositiveFloat | None = None


BLOCK_FIELDS = frozenset(Block.model_fields)


class Override(SpecModel):
    """Partial block settings deep-merged into a stack's ``block`` for the listed ``layers``.

    The partial keys are those of ``Block``; they are kept as given and checked once merged
    (``archlab.specs.load.check_overrides``), so an error points at the override that caused it.
    """

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    layers: LayerList

    @property
    def partial(self) -> dict[str, Any]:
        """The block settings this override changes, as written."""
        return dict(self.model_extra or {})


# -------------------------------------------------------------------------------------- pruning

PruneMethod = Literal["dynamic", "attention_topk", "merge"]


class PruneSettings(SpecModel):
    """What a token pruning stage does; shared by ``token_prune`` nodes and the ``prune`` shorthand."""

    method: PruneMethod
    keep: Fraction | None = None
    r: Count | None = None
    fuse: bool = False

    @model_validator(mode="after")
    def _fields_for_method(self) -> PruneSettings:
        problems = []
        if self.method in ("dynamic", "attention_topk") and self.keep is None:
            problems.append(
                f"method {self.method!r} needs 'keep', the fraction of patch tokens kept"
            )
        if self.method == "merge":
            if self.r is None:
                problems.append("method 'merge' needs 'r', the token pairs merged per layer")
            if self.keep is not None:
                problems.append("method 'merge' takes 'r', not 'keep'")
        if self.method != "merge" and self.r is not None:
            problems.append(f"'r' belongs to method 'merge', not {self.method!r}")
        if self.fuse and self.method != "attention_topk":
            problems.append(f"'fuse' belongs to method 'attention_topk', not {self.method!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class PruneAt(PruneSettings):
    """The ``prune`` shorthand of an encoder: a stage at each 0-based layer index in ``at``."""

    at: list[LayerIndex] = Field(min_length=1)


# ---------------------------------------------------------------------------------------- nodes


class EmbedNode(SpecModel):
    op: Literal["embed"]
    input: Identifier
    dim: Count | None = None
    tie: Identifier | None = None
    scale: bool = False


class PatchEmbedNode(SpecModel):
    op: Literal["patch_embed"]
    input: Identifier
    dim: Count
    patch_size: Pair


class ClsTokenNode(SpecModel):
    op: Literal["cls_token"]
    input: Identifier
    count: Count = 1


class PositionNode(SpecModel):
    op: Literal["position"]
    input: Identifier
    encoding: Literal["sinusoidal", "learned", "sincos_2d"]
    max_len: Count | None = None


class _Stack(SpecModel):
    input: Identifier
    depth: Annotated[int, Field(gt=0, le=MAX_DEPTH), Integral]
    block: Block
    overrides: list[Override] = []

    @cached_property
    def layer_overrides(self) -> list[tuple[int, ...]]:
        """For each layer, the indices of the overrides that cover it, in the order written."""
        owners: list[list[int]] = [[] for _ in range(self.depth)]
        for k, override in enumerate(self.overrides):
            for layer in override.layers:
                if layer < self.depth:
                    owners[layer].append(k)
        return [tuple(o) for o in owners]


class EncoderNode(_Stack):
    op: Literal["encoder"]
    prune: PruneAt | None = None


class DecoderNode(_Stack):
    op: Literal["decoder"]
    memory: Identifier | None = None


class TokenPruneNode(PruneSettings):
    op: Literal["token_prune"]
    input: Identifier


PoolMode = Literal["cls", "first", "distill", "mean", "max", "last"]


class NormNode(SpecModel):
    op: Literal["norm"]
    input: Identifier
    kind: NormKind = "layernorm"
    eps: PositiveFloat = 1e-6


class PoolNode(SpecModel):
    op: Literal["pool"]
    input: Identifier
    mode: PoolMode | None = None


class PreLogits(SpecModel):
    """A ``Linear(D, dim)`` and an activation between the pooled vector and the classifier (the
    pooler of BERT, the representation layer of ViT); ``dim`` null = D."""

    dim: Count | None = None
    activation: Literal["tanh"] = "tanh"


class ClassifyNode(SpecModel):
    op: Literal["classify"]
    input: Identifier
    classes: Count
    pool: PoolMode | None = None
    pre_logits: PreLogits | None = None


class LMHeadNode(SpecModel):
    op: Literal["lm_head"]
    input: Identifier
    tie: Identifier | None = None
    vocab_size: Count | None = None
    scale: PositiveFloat | None = None


class AddNode(SpecModel):
    op: Literal["add"]
    inputs: list[Identifier] = Field(min_length=2)


class AverageNode(SpecModel):
    op: Literal["average"]
    inputs: list[Identifier] = Field(min_length=2)


class ConcatNode(SpecModel):
    op: Literal["concat"]
    inputs: list[Identifier] = Field(min_length=2)
    axis: Literal["sequence", "feature"] = "sequence"


class DropoutNode(SpecModel):
    op: Literal["dropout"]
    input: Identifier
    p: Probability


Node = Annotated[
    EmbedNode
    | PatchEmbedNode
    | ClsTokenNode
    | PositionNode
    | EncoderNode
    | DecoderNode
    | TokenPruneNode
    | NormNode
    | PoolNode
    | ClassifyNode
    | LMHeadNode
    | AddNode
    | AverageNode
    | ConcatNode
    | DropoutNode,
    Field(discriminator="op"),
]
StackNode = EncoderNode | DecoderNode

OPS = (
    "embed",
    "patch_embed",
    "cls_token",
    "position",
    "encoder",
    "decoder",
    "token_prune",
    "norm",
    "pool",
    "classify",
    "lm_head",
    "add",
    "average",
    "concat",
    "dropout",
)


def node_inputs(node: Any) -> list[str]:
    """The ids a node reads data from (``input``/``inputs`` and a decoder's ``memory``)."""
    refs = list(node.inputs) if hasattr(node, "inputs") else [node.input]
    if isinstance(node, DecoderNode) and node.memory is not None:
        refs.append(node.memory)
    return refs


# ------------------------------------------------------------------------------------------ spec


class Spec(SpecModel):
    """A whole spec document. Use ``archlab.load_spec`` to get one: it also checks the graph."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        allow_inf_nan=False,
        strict=True,
        json_schema_extra={"$id": "https://archlab.dev/schema/spec-v1.json"},
    )

    schema_: str | None = Field(default=None, alias="$schema")
    version: Literal[1]
    name: str | None = None
    description: str | None = None
    inputs: dict[Identifier, Input] = Field(min_length=1)
    nodes: dict[Identifier, Node] = Field(min_length=1)
    outputs: Annotated[
        list[Identifier],
        BeforeValidator(_string_to_list, json_schema_input_type=Identifier | list[Identifier]),
        Field(min_length=1),
    ]

    def image_inputs(self) -> tuple[str, ...]:
        """The names of the spec's image inputs, in the order the spec lists its inputs."""
        return tuple(name for name, inp in self.inputs.items() if inp.kind == "image")
