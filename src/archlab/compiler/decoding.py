"""Incremental decoding of a compiled model: what a spec allows, and the caches that make it fast.

``decode_plan`` reads from the analysed graph which input is decoded (the tokens input the
``lm_head`` reads through a decoder), which inputs stay fixed (an encoder-decoder's source),
and whether every node on the decoded path can be computed token by token: embeddings, position
tables, causal decoder stacks, norms, dropout, ``add``/``average``/feature ``concat`` and the
``lm_head``. Anything else there (a bidirectional encoder, a non-causal mask, pruning, a
sequence ``concat``) is refused with a ``DecodeError`` that names the node.

``Decoding`` installs the caches of ``compiler.nn.kv_cache`` on the model's modules for the
length of a ``with`` block and runs the model's own ``forward``: once on the prompt
(``prefill``), then on each new token (``step``), each returning the logits of the last
position. Nothing else of the model changes, so decoding computes what ``forward`` computes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from archlab.compiler.builders import mask_pattern
from archlab.compiler.devices import device_of
from archlab.compiler.nn.heads import LMHead
from archlab.compiler.nn.kv_cache import Clock, CrossCache, KVCache, LinearState, Memo
from archlab.compiler.nn.linear import Linear
from archlab.compiler.nn.linear_attention import LinearAttention
from archlab.compiler.nn.positions import LearnedPosition, SinusoidalPosition
from archlab.compiler.nn.rotary import RotaryEmbedding
from archlab.compiler.nn.stack import Stack
from archlab.specs.analysis import Graph, LMHeadPlan, NodeInfo, TokensShape, upstream_through

if TYPE_CHECKING:
    from archlab.compiler.model import CompiledModel

#: marks an attribute a decoding set that only the class defined before (removed on exit)
_CLASS_DEFAULT = object()
#: ops computed token by token, so a cached decoding runs them on the new tokens alone
PER_TOKEN_OPS = frozenset({"embed", "norm", "dropout", "lm_head", "add", "average"})


class DecodeError(ValueError):
    """A spec, or a decoding request, that incremental decoding cannot serve; the message says
    which node or argument and why."""


@dataclass(frozen=True)
class DecodePlan:
    """What decoding a spec involves.

    ``input``: the decoded tokens input; ``fixed``: the other inputs (an encoder-decoder's
    source), given once; ``head``: the ``lm_head`` node; ``path``: the nodes downstream of the
    decoded input, in order; ``memos``: stacks off that path whose output the path reads (an
    encoder), computed once; ``window``: the sliding window every self-attention on the path
    has, when they all have one and no position table bounds the length (decoding may then go
    on past ``max_len``), else None.
    """

    input: str
    fixed: tuple[str, ...]
    head: str
    vocab: int
    max_len: int
    pad_id: int | None
    path: tuple[str, ...]
    memos: tuple[str, ...]
    window: int | None

    @property
    def encoder_decoder(self) -> bool:
        return bool(self.fixed)


def decode_plan(graph: Graph) -> DecodePlan:
    """The decoding plan of an analysed spec, or a DecodeError saying what prevents it."""
    spec = graph.spec
    heads = [o for o in spec.outputs if graph.nodes[o].op == "lm_head"]
    if len(spec.outputs) != 1 or not heads:
        ops = ", ".join(f"`{o}` ({graph.nodes[o].op})" for o in spec.outputs)
        raise DecodeError(
            f"generation needs a spec whose one output is an lm_head; this one outputs {ops} "
            "(an encoder-only or classification spec cannot write)"
        )
    head = heads[0]
    decoders = [n for n in graph.upstream(head) if graph.nodes[n].op == "decoder"]
    if not decoders:
        raise DecodeError(
            f"the lm_head `{head}` reads no decoder: an encoder-only spec (a bidirectional "
            "encoder sees every token at once) cannot generate token by token"
        )
    last = decoders[-1]
    main = graph.nodes[last].inputs[0]
    sources = [n for n in graph.upstream(main) if graph.nodes[n].op == "input"]
    if len(sources) != 1 or not isinstance(graph.shape(sources[0]), TokensShape):
        raise DecodeError(
            f"the decoder `{last}` reads {', '.join(f'`{s}`' for s in sources) or 'no input'}; "
            "generation decodes one tokens input"
        )
    decoded = sources[0]
    shape = graph.shape(decoded)
    assert isinstance(shape, TokensShape)
    path = tuple(n for n in graph.order if decoded in graph.upstream(n) and n != decoded)
    for node_id in path:
        _check_node(graph, graph.nodes[node_id])
    fixed = tuple(n for n in spec.inputs if n != decoded)
    memories = [graph.nodes[n].stack for n in path if graph.nodes[n].op == "decoder"]
    stacks = [_stack_behind(graph, p.memory) for p in memories if p and p.memory is not None]
    return DecodePlan(
        input=decoded,
        fixed=fixed,
        head=head,
        vocab=graph.nodes[head].plan_as(LMHeadPlan).vocab,
        max_len=shape.length,
        pad_id=shape.pad_id,
        path=path,
        memos=tuple(s for s in stacks if s is not None),
        window=_window(graph, path),
    )


def _stack_behind(graph: Graph, ref: str) -> str | None:
    """The encoder or decoder that ``ref`` is (or reaches through per-token maps), if any."""
    info = upstream_through(graph.nodes, ref)
    return info.id if info is not None and info.op in ("encoder", "decoder") else None


def _check_node(graph: Graph, info: NodeInfo) -> None:
    """Refuse a node on the decoded path that cannot be computed token by token."""
    where = f"node `{info.id}` ({info.op})"
    if info.op in PER_TOKEN_OPS:
        return
    if info.op == "concat" and getattr(info.spec, "axis", "sequence") == "feature":
        return
    if info.op == "position":
        if info.spec.encoding not in ("learned", "sinusoidal"):
            raise DecodeError(f"{where}: a {info.spec.encoding} position cannot be decoded")
        return
    if info.op == "encoder":
        raise DecodeError(
            f"{where} is a bidirectional encoder on the generated sequence: every token would "
            "change the ones before it, so it cannot generate token by token"
        )
    if info.op != "decoder":
        raise DecodeError(f"{where} is on the generated sequence and has no token-by-token form")
    plan = info.stack
    assert plan is not None
    for layer in plan.layers:
        if layer.prune is not None:
            raise DecodeError(f"{where} prunes tokens at layer {layer.index}; generation cannot")
        mask = mask_pattern(layer.attention.mask)
        if not mask.causal:
            raise DecodeError(
                f"{where}: layer {layer.index}'s self-attention mask is {mask.kind} without "
                "causal, so later tokens change earlier ones; generation needs a causal mask"
            )


def _window(graph: Graph, path: tuple[str, ...]) -> int | None:
    """The sliding window of every self-attention on the path, if they share one and nothing
    (a learned position table) bounds the length; else None."""
    windows = set()
    for node_id in path:
        info = graph.nodes[node_id]
        if info.op == "position" and info.spec.encoding == "learned":
            return None
        if info.op == "decoder":
            assert info.stack is not None
            for layer in info.stack.layers:
                mask = mask_pattern(layer.attention.mask)
                if mask.kind != "sliding_window" or layer.attention.kind != "softmax":
                    return None
                windows.add(mask.window)
    return windows.pop() if len(windows) == 1 else None


class Decoding:
    """The caches of one decoding installed on ``model`` inside a ``with`` block.

    ``capacity``: the most tokens the decoded sequence will hold (prompt plus new tokens).
    ``shift``: each row's left padding `(B,)`, or None. Inside the block, ``prefill`` runs the
    prompt and ``step`` each new token; both return the last position's logits `(B, V)`.
    ``reorder`` keeps the rows a beam search chose. Leaving the block removes every cache.
    ``static``: every step has the same shapes (the caches attend over all their slots, the
    position is a tensor updated in place), so ``compile`` can wrap the steps in
    ``torch.compile`` (CUDA graphs with ``mode="reduce-overhead"``).
    """

    def __init__(
        self,
        model: CompiledModel,
        plan: DecodePlan,
        *,
        capacity: int,
        shift: Tensor | None = None,
        padded: bool = False,
        static: bool = False,
    ) -> None:
        self.model = model
        self.plan = plan
        self.capacity = capacity
        device = device_of(model)
        # a pad_id makes any new token that equals it a padded key, as in forward
        padded = padded or shift is not None or plan.pad_id is not None
        empty = torch.zeros(0, dtype=torch.long, device=device)
        self.clock = Clock(empty, shift, padded, static=static)
        self.position = torch.zeros(1, dtype=torch.long, device=device)  # a static step's
        self.forward: Any = self._forward
        self.length = 0  # tokens of the decoded sequence so far
        self.fixed: dict[str, Tensor] = {}
        self.caches: list[Any] = []
        self.installed: list[tuple[nn.Module, str, Any]] = []

    def __enter__(self) -> Decoding:
        for node_id in self.plan.path:
            module = getattr(self.model, node_id)
            if isinstance(module, LearnedPosition | SinusoidalPosition):
                if isinstance(module, SinusoidalPosition):
                    module.extend(self.capacity)
                self._install(module, "clock", self.clock)
            elif isinstance(module, Stack):
                self._install_stack(module)
        for node_id in self.plan.memos:
            self._install(getattr(self.model, node_id), "memo", Memo())
        self._install(getattr(self.model, self.plan.head), "last_only", True)
        for module in self.model.modules():  # few rows a step: weight-first products on CPU
            if isinstance(module, Linear | LMHead):
                self._install(module, "weight_first", True)
        return self

    def __exit__(self, *exc: object) -> None:
        for module, name, before in reversed(self.installed):
            if before is _CLASS_DEFAULT:
                delattr(module, name)  # the class's own default shows again
            else:
                setattr(module, name, before)
        self.installed.clear()
        self.caches.clear()

    def _install(self, module: nn.Module, name: str, value: Any) -> None:
        before = module.__dict__.get(name, _CLASS_DEFAULT)
        setattr(module, name, value)
        self.installed.append((module, name, before))
        if hasattr(value, "reorder"):
            self.caches.append(value)

    def _install_stack(self, stack: Stack) -> None:
        for index, layer in enumerate(stack.layers):
            attention: Any = layer.attention
            if isinstance(attention, LinearAttention):
                cache: Any = LinearState(self.clock)
            else:
                for module in attention.modules():
                    if isinstance(module, RotaryEmbedding):
                        module.extend(self.capacity)
                mask = attention.mask
                ring = mask.kind == "sliding_window" and mask.causal
                relative = stack.relative_bias if stack.bias_layers[index] else None
                size = min(mask.window, self.capacity) if ring else self.capacity
                cache = KVCache(self.clock, size, ring=ring, relative=relative)
            self._install(attention, "cache", cache)
            cross: Any = layer.cross_attention
            if cross is not None:
                kind = LinearState if isinstance(cross, LinearAttention) else CrossCache
                self._install(cross, "cache", kind(self.clock))

    def prefill(self, tokens: Tensor, mask: Tensor | None = None, **fixed: Tensor) -> Tensor:
        """Run the prompt `tokens` `(B, T)` (padding in `mask`, True = real) with the fixed
        inputs (and their masks). -> the last position's logits `(B, V)`."""
        self.fixed = fixed
        return self._run(tokens, mask)

    def step(self, tokens: Tensor) -> Tensor:
        """Run the next tokens `(B, T)` (usually T = 1). -> the last position's logits."""
        return self._run(tokens, None)

    def compile(self, **options: Any) -> None:
        """Run the steps (not the prefill) through ``torch.compile(**options)``; a static
        decoding compiles one graph for all of them."""
        self.forward = torch.compile(self._forward, **options)

    def _run(self, tokens: Tensor, mask: Tensor | None) -> Tensor:
        T = tokens.shape[1]
        start = self.length
        self.clock.prefill = start == 0
        if self.clock.static and not self.clock.prefill and T == 1:
            self.position.fill_(start)  # in place: a compiled step reads the same tensor
            self.clock.qpos = self.position
            logits = self.forward(tokens, mask)
        else:
            self.clock.qpos = torch.arange(start, start + T, device=tokens.device)
            logits = self._forward(tokens, mask)
        self.length += T
        return logits

    def _forward(self, tokens: Tensor, mask: Tensor | None) -> Tensor:
        inputs = {self.plan.input: tokens, **self.fixed}
        if mask is not None:
            inputs[f"{self.plan.input}_mask"] = mask
        return self.model(**inputs)[:, -1]

    def reorder(self, index: Tensor) -> None:
        """Keep the rows `index` `(B',)` of every cache, in that order (beam search)."""
        for cache in self.caches:
            cache.reorder(index)
        self.fixed = {name: t.index_select(0, index) for name, t in self.fixed.items()}
        if self.clock.shift is not None:
            self.clock.shift = self.clock.shift.index_select(0, index)

    def caches_of(self, kind: type) -> Iterator[Any]:
        """The installed caches of one kind (``KVCache``, ``LinearState``, ...)."""
        return (c for c in self.caches if isinstance(c, kind))


__all__ = ["PER_TOKEN_OPS", "DecodeError", "DecodePlan", "Decoding", "decode_plan"]
