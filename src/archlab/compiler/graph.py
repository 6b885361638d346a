"""Spec -> checked graph with every shape inferred, before any weight exists.

``analyze(spec)`` resolves every default that depends on the graph (widths flowing along edges,
``position.max_len``, pooling modes, tied vocabularies, per-layer blocks with overrides merged,
masks and cross-attention settings, pruning keep counts), checks everything a spec can get wrong
across fields, and expands the ``prune`` shorthand into ``token_prune`` stages. All problems are
collected and raised together as one ``SpecError``.

This module imports no torch: ``arch validate`` runs it.
"""

from __future__ import annotations

import difflib
import keyword
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import networkx as nx

from archlab.specs.errors import ErrorList
from archlab.specs.load import merge_block
from archlab.specs.models import (
    Attention,
    Block,
    BlockLocalMask,
    CausalMask,
    ClassifyNode,
    ClsTokenNode,
    ConcatNode,
    CrossAttention,
    DecoderNode,
    DropoutNode,
    EmbedNode,
    EncoderNode,
    FeaturesInput,
    ImageInput,
    LMHeadNode,
    Mask,
    NoMask,
    NormKind,
    NormNode,
    PatchEmbedNode,
    PoolNode,
    Position,
    PositionNode,
    PruneSettings,
    RelativeBias,
    Rotary,
    SlidingWindowMask,
    Spec,
    TokenPruneNode,
    TokensInput,
    node_inputs,
)

# ------------------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class TokensShape:
    """Token ids ``(B, T)``."""

    length: int
    vocab: int
    pad_id: int | None = None

    def __str__(self) -> str:
        return f"(B, {self.length})"


@dataclass(frozen=True)
class ImageShape:
    """Images ``(B, C, H, W)``."""

    channels: int
    height: int
    width: int

    def __str__(self) -> str:
        return f"(B, {self.channels}, {self.height}, {self.width})"


@dataclass(frozen=True)
class SeqShape:
    """Token sequences ``(B, T, D)``; the first ``n_cls`` tokens are CLS-like and never pruned.

    ``grid`` is the patch grid when the non-CLS tokens are an image's patches in row-major order;
    ``dim_from`` is the spec path the width was declared at (for error messages).
    ``length`` is the length at inference, which every summary reports; ``train_length`` is set
    where training sees a longer sequence: a ``dynamic`` stage upstream keeps every token there
    and only marks the dropped ones in its policy. Sizes that bound the sequence at run time
    (an attention's ``max_len``) take ``max_length``.
    """

    length: int
    dim: int
    n_cls: int = 0
    grid: tuple[int, int] | None = None
    dim_from: str = ""
    train_length: int | None = None

    @property
    def patches(self) -> int:
        return self.length - self.n_cls

    @property
    def max_length(self) -> int:
        """The longest this sequence gets: in training when a dynamic stage kept every token."""
        return self.length if self.train_length is None else self.train_length

    def __str__(self) -> str:
        return f"(B, {self.length}, {self.dim})"


@dataclass(frozen=True)
class VecShape:
    """One vector per sample ``(B, D)``."""

    dim: int
    dim_from: str = ""

    def __str__(self) -> str:
        return f"(B, {self.dim})"


Shape = TokensShape | ImageShape | SeqShape | VecShape

# ------------------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class AttentionPlan:
    """An attention layer with every default resolved."""

    kind: str
    heads: int
    kv_heads: int
    head_dim: int
    dim: int  # width of the queries and of the output
    kv_dim: int | None  # width keys/values are projected from (cross-attention); None = self
    mask: Mask
    position: Position | None
    dropout: float
    bias: bool
    qk_norm: bool
    feature_map: Literal["elu", "relu"]
    norm_kind: NormKind  # the block's norm kind, used by qk_norm
    norm_eps: float


@dataclass(frozen=True)
class PruneStage:
    """A token pruning stage with its token counts (``tokens_*`` include the CLS tokens)."""

    method: str
    keep: float | None
    r: int | None
    fuse: bool
    layer: int | None  # layer of the stack it belongs to (None: an explicit token_prune node)
    placement: (
        str  # "before" layer (dynamic), "inside" (between attention and MLP), "between" stacks
    )
    n_cls: int
    tokens_before: int
    tokens_after: int
    dim: int
    head_dim: int | None = None  # of the attention it reads (merge: key similarity)


@dataclass(frozen=True)
class LayerPlan:
    """One layer of a stack: its merged block and resolved attention, and its token counts."""

    index: int
    block: Block
    attention: AttentionPlan
    cross_attention: AttentionPlan | None
    hidden: int
    drop_path: float
    tokens: int  # tokens entering the layer (after a ``before`` stage)
    tokens_mlp: int  # tokens reaching the MLP (after an ``inside`` stage)
    prune: PruneStage | None
    override: int | None  # index of the override that shaped it, if any


@dataclass(frozen=True)
class StackPlan:
    """An encoder or decoder stack, resolved layer by layer."""

    id: str
    op: str
    dim: int
    causal: bool
    layers: tuple[LayerPlan, ...]
    memory: str | None
    memory_shape: SeqShape | None
    relative_bias: RelativeBias | None
    relative_bias_heads: int | None

    @property
    def stages(self) -> list[PruneStage]:
        return [layer.prune for layer in self.layers if layer.prune is not None]


@dataclass
class NodeInfo:
    """A spec node (or input) with its inferred output shape and resolved settings."""

    id: str
    op: str  # the node's op, or "input"
    spec: Any
    shape: Shape
    inputs: list[str] = field(default_factory=list)
    resolved: dict[str, Any] = field(default_factory=dict)
    stack: StackPlan | None = None
    prune: PruneStage | None = None


@dataclass
class Graph:
    """The analysed spec: topological order, shapes, plans and the expanded networkx graph.

    ``expanded`` has one node per row of the model summary: a stack with ``prune`` becomes its
    layer segments and ``token_prune`` stages (``encoder.layers.0-2``, ``encoder.prune.3``, ...);
    ``alias`` maps each spec id to the expanded node that produces its output.
    """

    spec: Spec
    order: list[str]
    nodes: dict[str, NodeInfo]
    expanded: nx.DiGraph
    alias: dict[str, str]

    def shape(self, ref: str) -> Shape:
        return self.nodes[ref].shape


# Attribute names of torch.nn.Module (torch 2.x), hard-coded so that validation imports no torch;
# ``tests/compiler/test_graph.py`` checks the list against the installed torch. Plus the names
# archlab's compiled model itself defines.
MODULE_ATTRIBUTES = (
    frozenset(
        [
            "T_destination",
            "add_module",
            "apply",
            "bfloat16",
            "buffers",
            "call_super_init",
            "children",
            "compile",
            "cpu",
            "cuda",
            "double",
            "dump_patches",
            "eval",
            "extra_repr",
            "float",
            "forward",
            "get_buffer",
            "get_extra_state",
            "get_parameter",
            "get_submodule",
            "half",
            "ipu",
            "load_state_dict",
            "modules",
            "mtia",
            "named_buffers",
            "named_children",
            "named_modules",
            "named_parameters",
            "parameters",
            "register_backward_hook",
            "register_buffer",
            "register_forward_hook",
            "register_forward_pre_hook",
            "register_full_backward_hook",
            "register_full_backward_pre_hook",
            "register_load_state_dict_post_hook",
            "register_load_state_dict_pre_hook",
            "register_module",
            "register_parameter",
            "register_state_dict_post_hook",
            "register_state_dict_pre_hook",
            "requires_grad_",
            "set_extra_state",
            "set_submodule",
            "share_memory",
            "smart_apply",
            "state_dict",
            "to",
            "to_empty",
            "train",
            "training",
            "type",
            "xpu",
            "zero_grad",
        ]
    )
    | frozenset({"spec", "graph", "summary", "spec_hash", "inputs", "outputs", "code"})
    | frozenset(
        # the private attributes nn.Module keeps on its class or in every instance's dict
        """_apply _backward_hooks _backward_pre_hooks _buffers _call_impl _compiled_call_impl
    _forward_hooks _forward_hooks_always_called _forward_hooks_with_kwargs _forward_pre_hooks
    _forward_pre_hooks_with_kwargs _get_backward_hooks _get_backward_pre_hooks _get_name
    _is_full_backward_hook _load_from_state_dict _load_state_dict_post_hooks
    _load_state_dict_pre_hooks _maybe_warn_non_full_backward_hook _modules _named_members
    _non_persistent_buffers_set _parameters _register_load_state_dict_pre_hook
    _register_state_dict_hook _replicate_for_data_parallel _save_to_state_dict _slow_forward
    _state_dict_hooks _state_dict_pre_hooks _version _wrapped_call_impl""".split()  # noqa: SIM905
    )
)


#: The ops that map each token on its own, so a sequence passes through them as it is: its
#: pruning state, and the stack whose attention it came from.
PASS_THROUGH_OPS = ("norm", "dropout")


def upstream_through(
    nodes: Mapping[str, NodeInfo], ref: str, ops: tuple[str, ...] = PASS_THROUGH_OPS
) -> NodeInfo | None:
    """The node whose output reaches ``ref`` through nodes of ``ops`` (norm and dropout): ``ref``
    itself when it is of another op; None where the walk meets a reference not in ``nodes`` (one
    the analysis refused). ``nodes``: ``Graph.nodes``, or the analysis's nodes so far."""
    info = nodes.get(ref)
    while info is not None and info.op in ops and info.inputs:
        info = nodes.get(info.inputs[0])
    return info


def prune_methods(info: NodeInfo) -> set[str]:
    """The pruning methods node ``info`` runs: a ``token_prune`` node's, or a stack's stages'."""
    if info.prune is not None:  # a token_prune node
        return {info.prune.method}
    if info.stack is not None:
        return {stage.method for stage in info.stack.stages}
    return set()


def graph_prune_methods(graph: Graph) -> set[str]:
    """The pruning methods anywhere in ``graph`` (empty for a spec that does not prune)."""
    return {method for info in graph.nodes.values() for method in prune_methods(info)}


def has_pruning(graph: Graph) -> bool:
    """Whether the spec has token pruning stages (its compiled ``forward`` then takes
    ``__trace``)."""
    return bool(graph_prune_methods(graph))


def check_graph(spec: Spec, source: str | None = None) -> None:
    """Raise ``SpecError`` if the spec's graph has any problem (``load_spec`` calls this)."""
    analyze(spec, source)


def analyze(spec: Spec, source: str | None = None) -> Graph:
    """Check a spec's graph, infer every shape and resolve every default. Raises ``SpecError``."""
    analyzer = _Analyzer(spec)
    graph = analyzer.run()
    analyzer.errors.raise_if_any(source)
    assert graph is not None  # no errors means the graph was completed
    return graph


def kept_tokens(keep: float, patches: int) -> int:
    """k = ceil(keep * patches), at least 1 (rounded first, so 0.7 * 10 keeps 7, not 8)."""
    return max(1, math.ceil(round(keep * patches, 9)))


# ------------------------------------------------------------------------------------ analyzer


class _Analyzer:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.errors = ErrorList()
        self.infos: dict[str, NodeInfo] = {}

    # -- entry ---------------------------------------------------------------------------------

    def run(self) -> Graph | None:
        spec = self.spec
        self._check_names()
        for name, inp in spec.inputs.items():
            self.infos[name] = NodeInfo(name, "input", inp, _input_shape(name, inp))

        data = nx.DiGraph()
        data.add_nodes_from(spec.inputs)
        data.add_nodes_from(spec.nodes)
        known = set(spec.inputs) | set(spec.nodes)
        broken_refs = False
        for node_id, node in spec.nodes.items():
            for field_name, ref in _refs(node):
                if ref not in known:
                    self.errors.add(f"nodes.{node_id}.{field_name}", _unknown_ref(ref, known))
                    broken_refs = True
                else:
                    # a tie shares weights rather than data, but orders the nodes all the same
                    data.add_edge(ref, node_id)
        for k, out in enumerate(spec.outputs):
            path = f"outputs.{k}" if len(spec.outputs) > 1 else "outputs"
            if out in spec.inputs:
                self.errors.add(path, f"{out!r} is an input; outputs name nodes")
            elif out not in spec.nodes:
                self.errors.add(path, _unknown_ref(out, set(spec.nodes)))
        if len(set(spec.outputs)) != len(spec.outputs):
            self.errors.add("outputs", f"outputs list a node twice: {spec.outputs}")

        cycles = [_rotate(c, list(spec.nodes)) for c in nx.simple_cycles(data)]
        for cycle in sorted(cycles):
            loop = " -> ".join([*cycle, cycle[0]])
            self.errors.add(f"nodes.{cycle[0]}.input", f"the graph has a cycle: {loop}")
        if not broken_refs:  # a mistyped reference would make everything upstream look unused
            self._check_unused(data)
        if cycles:
            return None

        order = [n for n in nx.topological_sort(data) if n in spec.nodes]
        for node_id in order:
            node = spec.nodes[node_id]
            refs = node_inputs(node)
            if not all(r in self.infos for r in refs):
                continue  # an input failed to resolve; its own error is already reported
            info = self._infer(node_id, node)
            if info is not None:
                info.inputs = refs
                self.infos[node_id] = info
        if self.errors:
            return None
        expanded, alias = self._expand(order)
        return Graph(spec, order, self.infos, expanded, alias)

    # -- names and usage ----------------------------------------------------------------------

    def _check_names(self) -> None:
        spec = self.spec
        for name in spec.inputs:
            self._check_identifier(f"inputs.{name}", name, "input name")
        for node_id in spec.nodes:
            path = f"nodes.{node_id}"
            self._check_identifier(path, node_id, "node id")
            if node_id in spec.inputs:
                self.errors.add(
                    path, f"node id {node_id!r} clashes with the input of that name; rename one"
                )
            if node_id in MODULE_ATTRIBUTES:
                self.errors.add(
                    path,
                    f"node id {node_id!r} clashes with an attribute of the compiled nn.Module; rename it",
                )
        for name in spec.inputs:
            if name.endswith("_mask") and name[: -len("_mask")] in spec.inputs:
                self.errors.add(
                    f"inputs.{name}",
                    f"input {name!r} clashes with the padding-mask argument of input {name[:-5]!r}",
                )

    def _check_identifier(self, path: str, name: str, what: str) -> None:
        if keyword.iskeyword(name) or name == "self":
            self.errors.add(path, f"{what} {name!r} is a Python keyword; rename it")
        elif name.startswith("__"):
            self.errors.add(
                path,
                f"{what} {name!r}: names starting with '__' are reserved for archlab's generated code",
            )

    def _check_unused(self, data: nx.DiGraph) -> None:
        used: set[str] = set()
        for out in self.spec.outputs:
            if out in data:
                used |= {out} | nx.ancestors(data, out)
        for node_id in self.spec.nodes:
            if node_id not in used:
                self.errors.add(
                    f"nodes.{node_id}",
                    f"node {node_id!r} is not used by any output (outputs: {', '.join(self.spec.outputs)}); "
                    "remove it or list it in outputs",
                )
        for name in self.spec.inputs:
            if name not in used:
                self.errors.add(
                    f"inputs.{name}", f"input {name!r} is not used by any output; remove it"
                )

    # -- per-op shape inference --------------------------------------------------------------

    def _seq(self, node_id: str, ref: str, op: str, field_name: str = "input") -> SeqShape | None:
        shape = self.infos[ref].shape
        if isinstance(shape, SeqShape):
            return shape
        self.errors.add(
            f"nodes.{node_id}.{field_name}",
            f"{op} needs a token sequence, but {_describe(ref, self.infos[ref])}",
        )
        return None

    def _infer(self, node_id: str, node: Any) -> NodeInfo | None:
        handler = getattr(self, f"_infer_{node.op}")
        result: NodeInfo | None = handler(node_id, node)
        return result

    def _info(self, node_id: str, node: Any, shape: Shape, **kw: Any) -> NodeInfo:
        return NodeInfo(node_id, node.op, node, shape, **kw)

    def _infer_embed(self, node_id: str, node: EmbedNode) -> NodeInfo | None:
        path = f"nodes.{node_id}"
        src = self.infos[node.input]
        if not isinstance(src.shape, TokensShape):
            self.errors.add(
                f"{path}.input", f"embed takes a tokens input, but {_describe(node.input, src)}"
            )
            return None
        dim, dim_from, root = node.dim, f"{path}.dim", node_id
        if node.tie is not None:
            tied = self._tie_target(node_id, node.tie, "tie")
            if tied is None:
                return None
            root = tied.resolved["tie_root"]
            tied_shape = tied.shape
            assert isinstance(tied_shape, SeqShape)
            if node.dim is not None and node.dim != tied_shape.dim:
                self.errors.add(
                    f"{path}.dim",
                    f"dim {node.dim} differs from the tied embedding {node.tie!r} "
                    f"(dim {tied_shape.dim}, from {tied_shape.dim_from}); drop dim or make them equal",
                )
                return None
            tied_vocab = tied.resolved["vocab"]
            if src.shape.vocab != tied_vocab:
                self.errors.add(
                    f"{path}.tie",
                    f"tied embeddings need equal vocabularies: input {node.input!r} has vocab_size "
                    f"{src.shape.vocab}, embedding {node.tie!r} has {tied_vocab}",
                )
                return None
            dim, dim_from = tied_shape.dim, tied_shape.dim_from
        elif dim is None:
            self.errors.add(
                f"{path}.dim", "'dim' is required (or 'tie' to share another embed's weight)"
            )
            return None
        shape = SeqShape(src.shape.length, dim, dim_from=dim_from)
        return self._info(
            node_id, node, shape, resolved={"dim": dim, "tie_root": root, "vocab": src.shape.vocab}
        )

    def _tie_target(self, node_id: str, ref: str, field_name: str) -> NodeInfo | None:
        path = f"nodes.{node_id}.{field_name}"
        if ref in self.spec.inputs:
            self.errors.add(path, f"can only tie to an embed node; {ref!r} is an input")
            return None
        target = self.spec.nodes.get(ref)
        if target is None:
            return None  # reported as an unknown reference
        if not isinstance(target, EmbedNode):
            self.errors.add(path, f"can only tie to an embed node; {ref!r} is a {target.op} node")
            return None
        if ref == node_id:
            self.errors.add(path, f"embed {node_id!r} cannot tie to itself")
            return None
        return self.infos.get(ref)

    def _infer_patch_embed(self, node_id: str, node: PatchEmbedNode) -> NodeInfo | None:
        path = f"nodes.{node_id}"
        src = self.infos[node.input]
        if not isinstance(src.shape, ImageShape):
            self.errors.add(
                f"{path}.input",
                f"patch_embed takes an image input, but {_describe(node.input, src)}",
            )
            return None
        (ph, pw), img = node.patch_size, src.shape
        bad = False
        for side, size, patch in (("height", img.height, ph), ("width", img.width, pw)):
            if size % patch:
                self.errors.add(
                    f"{path}.patch_size",
                    f"patch size {patch} does not divide the image {side} {size} "
                    f"(from inputs.{node.input}.size)",
                )
                bad = True
        if bad:
            return None
        grid = (img.height // ph, img.width // pw)
        shape = SeqShape(grid[0] * grid[1], node.dim, grid=grid, dim_from=f"{path}.dim")
        return self._info(node_id, node, shape)

    def _infer_cls_token(self, node_id: str, node: ClsTokenNode) -> NodeInfo | None:
        seq = self._seq(node_id, node.input, "cls_token")
        if seq is None or self._loses_policy(f"nodes.{node_id}.input", node.input, "cls_token"):
            return None
        shape = replace(
            seq,
            length=seq.length + node.count,
            n_cls=seq.n_cls + node.count,
            train_length=None if seq.train_length is None else seq.train_length + node.count,
        )
        return self._info(node_id, node, shape)

    def _infer_position(self, node_id: str, node: PositionNode) -> NodeInfo | None:
        path = f"nodes.{node_id}"
        seq = self._seq(node_id, node.input, "position")
        if seq is None:
            return None
        max_len = node.max_len if node.max_len is not None else seq.length
        if max_len < seq.length:
            self.errors.add(
                f"{path}.max_len",
                f"max_len {max_len} is shorter than the sequence it encodes ({seq.length} tokens "
                f"from {node.input!r}); raise it or leave it out",
            )
            return None
        if node.encoding == "sincos_2d":
            if seq.grid is None:
                self.errors.add(
                    f"{path}.encoding",
                    f"sincos_2d needs an image patch grid, but {node.input!r} carries no grid; "
                    "use 'learned' or 'sinusoidal'",
                )
                return None
            if seq.dim % 4:
                self.errors.add(
                    f"{path}.encoding",
                    f"sincos_2d needs a width divisible by 4, not {seq.dim} (from {seq.dim_from})",
                )
                return None
            if node.max_len is not None and node.max_len != seq.length:
                self.errors.add(
                    f"{path}.max_len", "sincos_2d encodes the grid itself; leave max_len out"
                )
                return None
        if self._methods_upstream(node.input):
            self.errors.add(
                f"{path}.input",
                f"{node.input!r} passed a token pruning stage, which keeps, reorders and merges "
                "tokens, so their slots are no longer their positions and a position encoding "
                "would add the wrong ones; encode positions before the first pruning stage",
            )
            return None
        return self._info(node_id, node, seq, resolved={"max_len": max_len})

    def _infer_encoder(self, node_id: str, node: EncoderNode) -> NodeInfo | None:
        return self._infer_stack(node_id, node)

    def _infer_decoder(self, node_id: str, node: DecoderNode) -> NodeInfo | None:
        return self._infer_stack(node_id, node)

    def _infer_token_prune(self, node_id: str, node: TokenPruneNode) -> NodeInfo | None:
        path = f"nodes.{node_id}"
        seq = self._seq(node_id, node.input, "token_prune")
        if seq is None:
            return None
        head_dim = None
        if node.method in ("attention_topk", "merge"):
            upstream = self._upstream_stack(node.input)
            if upstream is None:
                self.errors.add(
                    f"{path}.method",
                    f"{node.method} reads the attention of the layer before it, but {node.input!r} is "
                    "not an encoder/decoder (nor a norm or dropout after one)",
                )
                return None
            last = upstream.layers[-1].attention
            if not self._check_prune_attention(path, node.method, last):
                return None
            if upstream.layers[-1].prune is not None:
                self.errors.add(
                    f"{path}.method",
                    f"{node.method} reads the attention of {upstream.id!r}'s last layer, which "
                    "prunes tokens itself after that attention; let the stack's 'prune' cover "
                    "this stage too, or put a layer between them",
                )
                return None
            if node.method == "attention_topk" and seq.n_cls == 0:
                self.errors.add(f"{path}.method", _needs_cls(node.method))
                return None
            head_dim = last.head_dim
        if node.method != "dynamic" and "dynamic" in self._methods_upstream(node.input):
            self.errors.add(f"{path}.method", _after_dynamic(node.method))
            return None
        stage = _stage(node, None, "between", seq, head_dim)
        after = stage.tokens_after
        dynamic = node.method == "dynamic"
        shape = replace(
            seq, length=after, grid=None, train_length=_train_length(seq, after, dynamic)
        )
        return self._info(node_id, node, shape, prune=stage)

    def _methods_upstream(self, ref: str) -> set[str]:
        """The pruning methods the sequence ``ref`` went through (norm, dropout pass it on)."""
        methods: set[str] = set()
        info = upstream_through(self.infos, ref)
        while info is not None and (info.op == "token_prune" or info.stack is not None):
            methods.update(prune_methods(info))
            info = upstream_through(self.infos, info.inputs[0]) if info.inputs else None
        return methods

    def _loses_policy(self, path: str, ref: str, what: str) -> bool:
        """Report (and return True) when ``ref`` passed a dynamic stage, whose training policy
        ``what`` would not carry: only norm, dropout, stacks and token_prune nodes pass it on."""
        if "dynamic" not in self._methods_upstream(ref):
            return False
        self.errors.add(
            path,
            f"{ref!r} passed a dynamic pruning stage, and {what} cannot take such a sequence: in "
            "training DynamicViT keeps every token and marks the dropped ones in a policy that "
            "only norm, dropout, encoder/decoder and token_prune nodes carry, so the dropped "
            "tokens would count again; combine sequences before the dynamic stage, or pool first",
        )
        return True

    def _pruned_upstream(self, ref: str) -> bool:
        """Whether the sequence ``ref`` passed a pruning stage (through norm and dropout nodes)."""
        info = upstream_through(self.infos, ref)
        return info is not None and bool(prune_methods(info))

    def _upstream_stack(self, ref: str) -> StackPlan | None:
        info = upstream_through(self.infos, ref)
        return info.stack if info is not None else None

    def _check_prune_attention(self, path: str, method: str, attn: AttentionPlan) -> bool:
        if attn.kind != "softmax":
            self.errors.add(
                f"{path}.method",
                f"{method} needs softmax attention; the layer uses {attn.kind} attention",
            )
            return False
        return True

    def _infer_norm(self, node_id: str, node: NormNode) -> NodeInfo | None:
        shape = self.infos[node.input].shape
        if not isinstance(shape, SeqShape | VecShape):
            self.errors.add(
                f"nodes.{node_id}.input",
                f"norm needs features, but {_describe(node.input, self.infos[node.input])}",
            )
            return None
        return self._info(node_id, node, shape)

    def _pool_mode(self, path: str, mode: str | None, seq: SeqShape) -> str | None:
        if mode is None:
            return "cls" if seq.n_cls else "mean"
        if mode == "cls" and not seq.n_cls:
            self.errors.add(
                path, "pool mode 'cls' needs a cls_token upstream, and there is none; use 'mean'"
            )
            return None
        return mode

    def _infer_pool(self, node_id: str, node: PoolNode) -> NodeInfo | None:
        seq = self._seq(node_id, node.input, "pool")
        if seq is None:
            return None
        mode = self._pool_mode(f"nodes.{node_id}.mode", node.mode, seq)
        if mode is None:
            return None
        return self._info(
            node_id,
            node,
            VecShape(seq.dim, seq.dim_from),
            resolved={"mode": mode, "n_cls": seq.n_cls},
        )

    def _infer_classify(self, node_id: str, node: ClassifyNode) -> NodeInfo | None:
        path = f"nodes.{node_id}"
        shape = self.infos[node.input].shape
        resolved: dict[str, Any] = {"in_dim": getattr(shape, "dim", 0), "mode": None, "n_cls": 0}
        if isinstance(shape, SeqShape):
            mode = self._pool_mode(f"{path}.pool", node.pool, shape)
            if mode is None:
                return None
            resolved.update(mode=mode, n_cls=shape.n_cls)
        elif isinstance(shape, VecShape):
            if node.pool is not None:
                self.errors.add(
                    f"{path}.pool",
                    f"{node.input!r} is already pooled (B, {shape.dim}); leave pool out",
                )
                return None
        else:
            self.errors.add(
                f"{path}.input",
                f"classify needs features, but {_describe(node.input, self.infos[node.input])}",
            )
            return None
        return self._info(
            node_id, node, VecShape(node.classes, f"{path}.classes"), resolved=resolved
        )

    def _infer_lm_head(self, node_id: str, node: LMHeadNode) -> NodeInfo | None:
        path = f"nodes.{node_id}"
        seq = self._seq(node_id, node.input, "lm_head")
        if seq is None:
            return None
        vocab = node.vocab_size
        root = None
        if node.tie is not None:
            tied = self._tie_target(node_id, node.tie, "tie")
            if tied is None:
                return None
            tied_shape = tied.shape
            assert isinstance(tied_shape, SeqShape)
            if tied_shape.dim != seq.dim:
                self.errors.add(
                    f"{path}.tie",
                    f"lm_head input width {seq.dim} (from {seq.dim_from}) differs from the tied "
                    f"embedding {node.tie!r} (dim {tied_shape.dim}); tying needs equal widths",
                )
                return None
            if vocab is not None and vocab != tied.resolved["vocab"]:
                self.errors.add(
                    f"{path}.vocab_size",
                    f"vocab_size {vocab} differs from the tied embedding {node.tie!r}'s vocabulary "
                    f"{tied.resolved['vocab']}; leave it out",
                )
                return None
            vocab, root = tied.resolved["vocab"], tied.resolved["tie_root"]
        elif vocab is None:
            self.errors.add(
                f"{path}.vocab_size",
                "'vocab_size' is required when the head is not tied to an embed",
            )
            return None
        shape = SeqShape(
            seq.length, vocab, seq.n_cls, seq.grid, f"{path}.vocab_size", seq.train_length
        )
        return self._info(
            node_id, node, shape, resolved={"vocab": vocab, "tie_root": root, "in_dim": seq.dim}
        )

    def _infer_add(self, node_id: str, node: Any) -> NodeInfo | None:
        if any(self._loses_policy(f"nodes.{node_id}.inputs", r, "add") for r in node.inputs):
            return None
        shapes = [self.infos[ref].shape for ref in node.inputs]
        first = shapes[0]
        if not isinstance(first, SeqShape | VecShape):
            src = node.inputs[0]
            self.errors.add(
                f"nodes.{node_id}.inputs",
                f"add needs features, but {_describe(src, self.infos[src])}",
            )
            return None
        for ref, shape in zip(node.inputs[1:], shapes[1:], strict=True):
            if (
                not isinstance(shape, SeqShape | VecShape)
                or type(shape) is not type(first)
                or str(shape) != str(first)
            ):
                self.errors.add(
                    f"nodes.{node_id}.inputs",
                    f"add needs equal shapes: {node.inputs[0]!r} is {first}, {ref!r} is {shape}",
                )
                return None
        return self._info(node_id, node, first)

    def _infer_concat(self, node_id: str, node: ConcatNode) -> NodeInfo | None:
        path = f"nodes.{node_id}.inputs"
        seqs = []
        for ref in node.inputs:
            seq = self._seq(node_id, ref, "concat", "inputs")
            if seq is None or self._loses_policy(path, ref, "concat"):
                return None
            seqs.append(seq)
        first = seqs[0]
        if node.axis == "sequence":
            for ref, seq in zip(node.inputs[1:], seqs[1:], strict=True):
                if seq.dim != first.dim:
                    self.errors.add(
                        path,
                        f"concat along the sequence needs equal widths: {node.inputs[0]!r} has "
                        f"{first.dim} (from {first.dim_from}), {ref!r} has {seq.dim} (from {seq.dim_from})",
                    )
                    return None
            shape = SeqShape(
                sum(s.length for s in seqs), first.dim, first.n_cls, None, first.dim_from
            )
        else:
            for ref, seq in zip(node.inputs[1:], seqs[1:], strict=True):
                if seq.length != first.length:
                    self.errors.add(
                        path,
                        f"concat along features needs equal lengths: {node.inputs[0]!r} has "
                        f"{first.length} tokens, {ref!r} has {seq.length}",
                    )
                    return None
            shape = replace(first, dim=sum(s.dim for s in seqs), dim_from=f"nodes.{node_id}")
        return self._info(node_id, node, shape)

    def _infer_dropout(self, node_id: str, node: DropoutNode) -> NodeInfo | None:
        src = self.infos[node.input]
        if not isinstance(src.shape, SeqShape | VecShape):
            self.errors.add(
                f"nodes.{node_id}.input",
                f"dropout needs features, but {_describe(node.input, src)}",
            )
            return None
        return self._info(node_id, node, src.shape)

    # -- stacks ---------------------------------------------------------------------------------

    def _infer_stack(self, node_id: str, node: EncoderNode | DecoderNode) -> NodeInfo | None:
        path = f"nodes.{node_id}"
        seq = self._seq(node_id, node.input, node.op)
        if seq is None:
            return None
        causal = isinstance(node, DecoderNode)
        memory_shape = None
        if isinstance(node, DecoderNode) and node.memory is not None:
            memory_shape = self._seq(node_id, node.memory, "decoder memory", "memory")
            if memory_shape is None or self._loses_policy(
                f"{path}.memory", node.memory, "a decoder's memory"
            ):
                return None
        ok = True
        base = node.block.model_dump(mode="json", exclude_unset=True)
        blocks: list[tuple[Block, tuple[int, ...]]] = []
        for i in range(node.depth):
            owners = node.layer_overrides[i]
            merged = base
            for k in owners:  # overlapping overrides apply in the order written
                merged = merge_block(merged, node.overrides[k].partial)
            try:
                blocks.append((Block.model_validate(merged) if owners else node.block, owners))
            except ValueError as exc:
                self.errors.add(
                    f"{path}.overrides.{owners[-1]}",
                    f"layer {i}: the overrides {list(owners)} merge into an invalid block: {exc}",
                )
                return None

        reported: set[tuple[str, str]] = set()

        def report(owners: tuple[int, ...], rel: str, message: str, exact: bool = True) -> None:
            """Report at the last override of the layer that sets ``rel`` (with ``exact=False``:
            the layer's last override, whatever it sets), else at the stack's block."""
            k = _last_setting(node, owners, rel) if exact else (owners[-1] if owners else None)
            where = f"{path}.block.{rel}" if k is None else f"{path}.overrides.{k}.{rel}"
            if (where, message) not in reported:
                reported.add((where, message))
                self.errors.add(where, message)

        layers: list[LayerPlan] = []
        stages = self._prune_schedule(node_id, node, seq)
        if stages is None:  # reported; check the layers all the same
            ok, stages = False, {}
        tokens = seq.length
        rel_bias: RelativeBias | None = None
        rel_heads: int | None = None
        # layers that see pruned (reordered) tokens: from the first stage on, or all of them when
        # the stack's input was pruned upstream
        pruned_from = 0 if self._pruned_upstream(node.input) else None
        if stages:
            first = min(stages)
            placed = stages[first].placement
            pruned_from = first if placed == "before" else first + 1
            pruned_from = min(pruned_from, 0) if self._pruned_upstream(node.input) else pruned_from
        for i, (block, owners) in enumerate(blocks):
            last = owners[-1] if owners else None
            attn = self._attention(
                block.attention,
                seq,
                causal,
                block,
                lambda rel, msg, o=owners: report(o, f"attention.{rel}", msg),
            )
            cross = None
            if isinstance(node, DecoderNode) and node.memory is not None:
                assert memory_shape is not None
                cross = self._cross_attention(
                    block,
                    memory_shape,
                    seq,
                    lambda rel, msg, o=owners: report(o, f"cross_attention.{rel}", msg),
                )
                if cross is None:
                    ok = False
            elif block.cross_attention is not None:
                report(
                    owners,
                    "cross_attention",
                    "cross_attention is set, but the decoder has no 'memory' to attend to",
                )
                ok = False
            if attn is None:
                ok = False
                continue
            if isinstance(attn.position, RelativeBias):
                if rel_bias is None:
                    rel_bias, rel_heads = attn.position, attn.heads
                elif attn.position != rel_bias or attn.heads != rel_heads:
                    report(
                        owners,
                        "attention.position",
                        f"layers sharing the stack's relative_bias table need equal settings and head "
                        f"counts: layer {i} has {attn.heads} heads and {attn.position.model_dump(exclude={'kind'})}, "
                        f"an earlier layer {rel_heads} heads and {rel_bias.model_dump(exclude={'kind'})}",
                        exact=False,
                    )
                    ok = False
            if pruned_from is not None and (i >= pruned_from or i in stages):
                problem = _pruned_attention_problem(attn, i >= pruned_from)
                if problem is not None:
                    report(owners, "attention", f"layer {i} {problem}", exact=False)
                    ok = False
            hidden = (
                block.mlp.hidden if block.mlp.hidden is not None else int(block.mlp.ratio * seq.dim)
            )
            if hidden < 1:
                report(
                    owners,
                    "mlp.ratio",
                    f"ratio {block.mlp.ratio} of width {seq.dim} leaves no hidden units",
                )
                ok = False
            stage = stages.get(i)
            tokens_in = tokens
            if stage is not None:
                if stage.method in ("attention_topk", "merge") and not self._check_prune_attention(
                    f"{path}.prune", stage.method, attn
                ):
                    ok = False
                if stage.placement == "before":
                    stage = replace(stage, tokens_before=tokens, tokens_after=_after(stage, tokens))
                    tokens_in = tokens = stage.tokens_after
                else:
                    stage = replace(
                        stage,
                        tokens_before=tokens,
                        tokens_after=_after(stage, tokens),
                        head_dim=attn.head_dim,
                    )
                    tokens = stage.tokens_after
            drop_path = (
                block.drop_path * i / (node.depth - 1) if node.depth > 1 else block.drop_path
            )
            layers.append(
                LayerPlan(i, block, attn, cross, hidden, drop_path, tokens_in, tokens, stage, last)
            )
        if not ok:
            return None
        plan = StackPlan(
            node_id,
            node.op,
            seq.dim,
            causal,
            tuple(layers),
            getattr(node, "memory", None),
            memory_shape,
            rel_bias,
            rel_heads,
        )
        shape = replace(
            seq,
            length=tokens,
            grid=seq.grid if tokens == seq.length else None,
            train_length=_train_length(seq, tokens, _any_dynamic(plan.stages)),
        )
        return self._info(node_id, node, shape, stack=plan)

    def _prune_schedule(
        self, node_id: str, node: EncoderNode | DecoderNode, seq: SeqShape
    ) -> dict[int, PruneStage] | None:
        prune = getattr(node, "prune", None)
        if prune is None:
            return {}
        path = f"nodes.{node_id}.prune"
        ok = True
        outside = [i for i in prune.at if i >= node.depth]
        if outside:
            self.errors.add(
                f"{path}.at",
                f"{', '.join(map(str, outside))} outside the stack (depth {node.depth}: layers 0-{node.depth - 1})",
            )
            ok = False
        if list(prune.at) != sorted(set(prune.at)):
            self.errors.add(
                f"{path}.at", f"layer indices must be unique and ascending, not {list(prune.at)}"
            )
            ok = False
        if prune.method == "attention_topk" and seq.n_cls == 0:
            self.errors.add(f"{path}.method", _needs_cls(prune.method))
            ok = False
        if prune.method != "dynamic" and "dynamic" in self._methods_upstream(node.input):
            self.errors.add(f"{path}.method", _after_dynamic(prune.method))
            ok = False
        if not ok:
            return None
        placement = "before" if prune.method == "dynamic" else "inside"
        return {i: _stage(prune, i, placement, seq, None) for i in prune.at}

    def _attention(
        self, attn: Attention, seq: SeqShape, causal: bool, block: Block, report: Any
    ) -> AttentionPlan | None:
        dim = seq.dim
        ok = True
        if attn.head_dim is None and dim % attn.heads:
            report(
                "heads",
                f"{attn.heads} heads do not divide dim {dim} (dim comes from {seq.dim_from}); set head_dim or change heads",
            )
            ok = False
        kv_heads = attn.kv_heads if attn.kv_heads is not None else attn.heads
        if attn.heads % kv_heads:
            report("kv_heads", f"kv_heads {kv_heads} does not divide heads {attn.heads}")
            ok = False
        head_dim = attn.head_dim if attn.head_dim is not None else dim // attn.heads
        mask = _resolve_mask(attn.mask, causal)
        if attn.kind == "softmax" and attn.feature_map != "elu":  # elu: the default, harmless
            report(
                "feature_map",
                f"feature_map {attn.feature_map!r} belongs to linear attention; this attention is softmax, remove it",
            )
            ok = False
        if attn.kind == "linear":
            if not isinstance(mask, NoMask | CausalMask):
                report(
                    "mask",
                    f"linear attention supports the masks none and causal (plus padding); no kernel computes {mask.kind} with it",
                )
                ok = False
            if attn.position is not None:
                report(
                    "position",
                    f"linear attention takes no in-attention position ({attn.position.kind}); add a 'position' node before the stack instead",
                )
                ok = False
        if isinstance(attn.position, Rotary):
            rotated = round(attn.position.fraction * head_dim)
            if rotated % 2 or rotated == 0:
                report(
                    "position",
                    f"rotary needs an even number of dimensions, but fraction {attn.position.fraction} of head_dim {head_dim} is {rotated}",
                )
                ok = False
        if not ok:
            return None
        return AttentionPlan(
            attn.kind,
            attn.heads,
            kv_heads,
            head_dim,
            dim,
            None,
            mask,
            attn.position,
            attn.dropout,
            attn.bias,
            attn.qk_norm,
            attn.feature_map,
            block.norm.kind,
            block.norm.eps,
        )

    def _cross_attention(
        self, block: Block, memory: SeqShape, seq: SeqShape, report: Any
    ) -> AttentionPlan | None:
        base = block.attention
        given = block.cross_attention or CrossAttention()
        fields = {
            name: getattr(given, name) if getattr(given, name) is not None else getattr(base, name)
            for name in (
                "kind",
                "heads",
                "kv_heads",
                "head_dim",
                "dropout",
                "bias",
                "qk_norm",
                "feature_map",
            )
        }
        if given.heads is not None and given.kv_heads is None:
            fields["kv_heads"] = None  # a new head count: kv_heads default follows it
        ok = True
        if given.mask is not None and not isinstance(given.mask, NoMask):
            report(
                "mask",
                f"cross-attention sees the whole memory (plus its padding); mask {given.mask.kind} is not supported",
            )
            ok = False
        if given.position is not None:
            report(
                "position",
                f"cross-attention takes no in-attention position ({given.position.kind})",
            )
            ok = False
        if fields["kind"] == "linear":
            report("kind", "linear cross-attention is not supported; use softmax")
            ok = False
        if fields["kind"] != "linear":
            del fields["feature_map"]  # inherited, not written: softmax takes none
        attn = Attention.model_validate({**fields, "mask": "none", "position": None})
        plan = self._attention(attn, seq, False, block, report)
        if plan is None or not ok:
            return None
        return replace(plan, kv_dim=memory.dim)

    # -- expansion -----------------------------------------------------------------------------

    def _expand(self, order: list[str]) -> tuple[nx.DiGraph, dict[str, str]]:
        g = nx.DiGraph()
        alias: dict[str, str] = {}
        for name, info in self.infos.items():
            if info.op == "input":
                g.add_node(name, op="input", shape=info.shape, spec_id=name)
                alias[name] = name
        for node_id in order:
            info = self.infos[node_id]
            preds = [alias[r] for r in info.inputs]
            stack = info.stack
            if stack is None or not stack.stages:
                g.add_node(node_id, op=info.op, shape=info.shape, spec_id=node_id)
                for p in preds:
                    g.add_edge(p, node_id)
                alias[node_id] = node_id
                continue
            # a pruned stack: segments of layers and the stages between them
            data_pred, extra = preds[0], preds[1:]
            segment_start = 0
            seq = self.infos[info.inputs[0]].shape
            assert isinstance(seq, SeqShape)
            pieces: list[tuple[str, dict[str, Any]]] = []
            for layer in stack.layers:
                stage = layer.prune
                if stage is None:
                    continue
                end = layer.index - 1 if stage.placement == "before" else layer.index
                if end >= segment_start:
                    pieces.append(_segment(node_id, info, segment_start, end, stack, seq))
                pieces.append(
                    (
                        f"{node_id}.prune.{layer.index}",
                        {
                            "op": "token_prune",
                            "shape": replace(
                                seq,
                                length=stage.tokens_after,
                                grid=None,
                                train_length=_train_length(
                                    seq, stage.tokens_after, _any_dynamic(stack.stages)
                                ),
                            ),
                            "spec_id": node_id,
                            "stage": stage,
                        },
                    )
                )
                segment_start = end + 1
            if segment_start < len(stack.layers):
                pieces.append(
                    _segment(node_id, info, segment_start, len(stack.layers) - 1, stack, seq)
                )
            prev = data_pred
            for piece_id, attrs in pieces:
                g.add_node(piece_id, **attrs)
                g.add_edge(prev, piece_id)
                if attrs["op"] == info.op:
                    for p in extra:
                        g.add_edge(p, piece_id)
                prev = piece_id
            alias[node_id] = prev
        return g, alias


# ------------------------------------------------------------------------------------- helpers


def _segment(
    node_id: str, info: NodeInfo, start: int, end: int, stack: StackPlan, seq: SeqShape
) -> tuple[str, dict[str, Any]]:
    last = stack.layers[end]
    span = f"{start}-{end}" if end > start else f"{start}"
    return (
        f"{node_id}.layers.{span}",
        {
            "op": info.op,
            "shape": replace(
                seq,
                length=last.tokens_mlp,
                grid=seq.grid if last.tokens_mlp == seq.length else None,
                train_length=_train_length(seq, last.tokens_mlp, _any_dynamic(stack.stages)),
            ),
            "spec_id": node_id,
            "layers": (start, end),
        },
    )


def _rotate(cycle: list[str], order: list[str]) -> list[str]:
    """Start a cycle at its node written first in the spec, so messages never depend on hashing."""
    first = min(range(len(cycle)), key=lambda i: order.index(cycle[i]) if cycle[i] in order else -1)
    return cycle[first:] + cycle[:first]


def _stage(
    settings: PruneSettings, layer: int | None, placement: str, seq: SeqShape, head_dim: int | None
) -> PruneStage:
    stage = PruneStage(
        settings.method,
        settings.keep,
        settings.r,
        settings.fuse,
        layer,
        placement,
        seq.n_cls,
        seq.length,
        seq.length,
        seq.dim,
        head_dim,
    )
    return replace(stage, tokens_after=_after(stage, seq.length))


def _any_dynamic(stages: list[PruneStage]) -> bool:
    return any(stage.method == "dynamic" for stage in stages)


def _train_length(seq: SeqShape, length: int, dynamic: bool) -> int | None:
    """``train_length`` of ``seq`` after pruning leaves ``length`` tokens at inference; with
    ``dynamic`` one of the stages is DynamicViT's, which keeps every token in training."""
    train = seq.max_length if dynamic else seq.train_length
    return None if train == length else train


def _after(stage: PruneStage, tokens: int) -> int:
    patches = tokens - stage.n_cls
    if stage.method == "merge":
        assert stage.r is not None
        return tokens - min(stage.r, patches // 2)
    assert stage.keep is not None
    kept = kept_tokens(stage.keep, patches)
    if stage.fuse and kept < patches:
        kept += 1
    return stage.n_cls + kept


def _resolve_mask(mask: Mask | None, causal: bool) -> Mask:
    """Null -> the stack's own mask; ``causal: null`` inside a mask -> the stack's causality."""
    if mask is None:
        return CausalMask(kind="causal") if causal else NoMask(kind="none")
    if isinstance(mask, SlidingWindowMask | BlockLocalMask) and mask.causal is None:
        return mask.model_copy(update={"causal": causal})
    return mask


def _last_setting(node: EncoderNode | DecoderNode, owners: tuple[int, ...], rel: str) -> int | None:
    """The last of a layer's overrides that sets the dotted block field ``rel``, if any."""
    for k in reversed(owners):
        value: Any = node.overrides[k].partial
        for part in rel.split("."):
            value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
        if value is not _MISSING:
            return k
    return None


_MISSING = object()


def _pruned_attention_problem(attn: AttentionPlan, after: bool) -> str | None:
    """Why a layer that sees pruned tokens (``after``) or hosts a stage cannot, else None.

    Pruning keeps, reorders and merges tokens, so the positions of the survivors are no longer
    their slots: attention that depends on slots (rotary, ALiBi, relative tables, structural
    masks) would silently compute something else. DynamicViT's training policy, ToMe's
    proportional attention and EViT's CLS scores need softmax attention.
    """
    if attn.kind != "softmax":
        return f"sees pruned tokens, which needs softmax attention (it uses {attn.kind})"
    if not after:
        return None
    if attn.position is not None:
        return (
            f"sees pruned tokens, whose slots are no longer their positions, so it cannot use "
            f"{attn.position.kind} positions; encode positions before the first pruning stage "
            "(a 'position' node) or prune later"
        )
    if attn.mask.kind != "none":
        return (
            f"sees pruned tokens, whose slots are no longer their positions, so it cannot use a "
            f"{attn.mask.kind} mask; prune only bidirectional, unmasked stacks"
        )
    return None


def _after_dynamic(method: str) -> str:
    return (
        f"{method} cannot follow a dynamic stage: in training DynamicViT keeps every token and "
        f"only masks the dropped ones, which {method} would score, fuse or merge as if alive; "
        "use dynamic for the later stages too, or put this stage before the dynamic one"
    )


def _needs_cls(method: str) -> str:
    return f"{method} scores tokens by the CLS token's attention, but no cls_token is upstream; add one or use 'dynamic'"


def _input_shape(name: str, inp: Any) -> Shape:
    if isinstance(inp, TokensInput):
        return TokensShape(inp.max_len, inp.vocab_size, inp.pad_id)
    if isinstance(inp, ImageInput):
        return ImageShape(inp.channels, inp.size[0], inp.size[1])
    assert isinstance(inp, FeaturesInput)
    return SeqShape(inp.max_len, inp.dim, dim_from=f"inputs.{name}.dim")


def _describe(ref: str, info: NodeInfo) -> str:
    shape = info.shape
    if isinstance(shape, TokensShape):
        what = "a tokens input (add an embed node first)"
    elif isinstance(shape, ImageShape):
        what = "an image input (add a patch_embed node first)"
    elif isinstance(shape, VecShape):
        what = f"pooled vectors {shape}"
    else:
        what = f"a sequence {shape}"
    return f"{ref!r} is {what}"


def _unknown_ref(ref: str, known: set[str]) -> str:
    close = difflib.get_close_matches(ref, sorted(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"
    return f"{ref!r} is not a node or input{hint}"


def _refs(node: Any) -> list[tuple[str, str]]:
    refs: list[tuple[str, str]] = []
    if hasattr(node, "inputs"):
        refs += [(f"inputs.{k}", r) for k, r in enumerate(node.inputs)]
    else:
        refs.append(("input", node.input))
    if isinstance(node, DecoderNode) and node.memory is not None:
        refs.append(("memory", node.memory))
    if isinstance(node, EmbedNode | LMHeadNode) and node.tie is not None:
        refs.append(("tie", node.tie))
    return refs


__all__ = [
    "PASS_THROUGH_OPS",
    "AttentionPlan",
    "Graph",
    "ImageShape",
    "LayerPlan",
    "NodeInfo",
    "PruneStage",
    "SeqShape",
    "Shape",
    "StackPlan",
    "TokensShape",
    "VecShape",
    "analyze",
    "check_graph",
    "graph_prune_methods",
    "has_pruning",
    "kept_tokens",
    "prune_methods",
    "upstream_through",
]
