"""``archlab.embed``: one vector per sample, the representation a model's head reads or any node's
output pooled over its real tokens, batched, without gradient.

By default (``node=None``) the vector is the one the spec's single output head reads:

- ``classify``: the pooled vector entering its ``pre_logits`` layer (BERT's pooler) or, without
  one, its ``fc`` classifier: the CLS token (``cls``), the first position (``first``), the
  distillation token (``distill``), the mean or max of the real tokens after the CLS tokens
  (``mean``, ``max``), the last real token (``last``), or the vector a ``pool`` node upstream
  made. It is taken from the head's own layer with a forward pre-hook, so it is exactly what the
  head computes with. An ``average`` of classify heads (DeiT with its distillation head) gives
  the mean of its heads' vectors.
- ``lm_head``: the vector it reads at each sample's last real token (the one that predicts the
  next token), before a T5 head's rescaling; for an encoder-decoder, on the decoder's side.
- a bare sequence output (an encoder without head): that sequence pooled as with ``node=``.

With ``node`` (any node id of the spec, see ``model.graph.nodes``) the node's output is pooled
over the tokens present: ``cls`` takes the first token; ``mean`` the mean of the real tokens
(padding left out, and a node with CLS tokens leaves them out, as a mean-pooling head does). A
node after token pruning has fewer tokens; the mean is over those present (with the padding mask
the pruning carried). The default pool is ``cls`` where the node's shape has CLS tokens and
``mean`` otherwise; a node that is already one vector per sample `(B, D)` is returned as it is.

Each node's output and padding mask are read during the model's own forward: a forward hook on
the node's module (a module that returns ``(value, mask, ...)`` gives its mask; the others keep
their input's), and for a stack run through ``forward_tokens`` (pruned, or read by a later
``token_prune`` node) a wrapper of that method for the time of the call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from archlab.compiler.model import CompiledModel
from archlab.compiler.nn.heads import Classify, Pool
from archlab.compiler.nn.stack import Stack
from archlab.errors import UserInputError
from archlab.runners.data.common import TaskData
from archlab.specs.analysis import Graph, ImageShape, SeqShape, TokensShape, VecShape

POOLS = ("cls", "mean")


class EmbedError(UserInputError):
    """A model or request ``embed`` cannot serve; the message says why."""


@dataclass(frozen=True)
class _Reader:
    """What one ``embed`` reads: ``kind`` ``head`` (the vectors entering the classify heads
    ``nodes``, averaged when several), ``last`` (the input of the lm_head ``nodes[0]`` at the
    last real token), ``node`` (the output of ``nodes[0]``, pooled by ``pool`` unless None) or
    ``input`` (a features input, pooled); ``n_cls``: the CLS tokens of the read sequence; ``dim``
    the embedding's width D."""

    kind: str
    nodes: tuple[str, ...]
    dim: int
    pool: str | None = None
    n_cls: int = 0


@dataclass
class _Tap:
    """What one forward left: the padding mask of each node so far (None: every token is real),
    the captured outputs of the nodes read, and the vectors entering the read heads."""

    masks: dict[str, Tensor | None] = field(default_factory=dict)
    values: dict[str, Tensor] = field(default_factory=dict)
    head_inputs: dict[str, Tensor] = field(default_factory=dict)
    #: stacks whose ``forward_tokens`` already reported (their forward hook then stays quiet)
    reported: set[str] = field(default_factory=set)


def embed(
    model: CompiledModel, node: str | None = None, pool: str | None = None, **inputs: Tensor
) -> Tensor:
    """The embeddings of a batch: `(B, D)`, in the model's dtype, on its device, no gradient.

    ``inputs`` by name as ``model(...)`` takes them, with ``<input>_mask`` (bool `(B, T)`, True
    for real tokens) for padded sequences. ``node`` None: the representation the output head
    reads (see the module docstring); otherwise that node's output, pooled over its real tokens
    with ``pool`` (``cls`` or ``mean``; by default ``cls`` where the node has CLS tokens, else
    ``mean``). The model runs in eval mode (dropout off, pruning as at inference); its mode is
    restored afterwards. Raises ``EmbedError`` for an unknown node, pool or unservable spec.
    """
    reader = _reader(model.graph, node, pool)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _tapping(model, reader) as tap:
            tap.masks.update(_input_masks(model.graph, inputs))
            if reader.kind == "input":
                tap.values[reader.nodes[0]] = inputs[reader.nodes[0]]
            else:
                model(**inputs)
    finally:
        model.train(was_training)
    return _read(reader, tap)


def embed_dim(model: CompiledModel, node: str | None = None, pool: str | None = None) -> int:
    """D, the width of ``embed(model, node, pool, ...)``'s vectors, from the spec alone."""
    return _reader(model.graph, node, pool).dim


def embed_rows(
    model: CompiledModel,
    data: TaskData,
    rows: np.ndarray,
    *,
    batch_size: int = 256,
    node: str | None = None,
    pool: str | None = None,
) -> np.ndarray:
    """The embeddings of the samples ``rows`` `(N,)` of ``data`` (every input of
    ``data.inputs``, masks included), ``batch_size`` at a time on the model's device:
    `(N, D)` float32, the values one batch of all of them gives. See ``embed``."""
    if batch_size < 1:
        raise EmbedError(f"batch_size must be at least 1, got {batch_size}")
    picked = np.array(rows, dtype=np.int64).reshape(-1)  # a copy: rows may be read-only
    outside = picked[(picked < 0) | (picked >= len(data))]
    if outside.size:
        raise EmbedError(
            f"row {int(outside[0])} lies outside the data's {len(data)} samples "
            f"(0..{len(data) - 1})"
        )
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    out = np.empty((len(picked), embed_dim(model, node, pool)), dtype=np.float32)
    for start in range(0, len(picked), batch_size):
        index = torch.as_tensor(picked[start : start + batch_size])
        batch = {
            name: t[index].to(device, dtype if t.is_floating_point() else None)
            for name, t in data.inputs.items()
        }
        vectors = embed(model, node, pool, **batch)
        out[start : start + len(index)] = vectors.float().cpu().numpy()
    return out


def token_table(model: CompiledModel) -> tuple[str, np.ndarray]:
    """The first token input's name and the rows of its embedding table `(V, D)` float32 (the
    ``embed`` node's weight, without its sqrt(D) scale): the vectors ``arch embed --tokens``
    maps, one per token id."""
    graph = model.graph
    tokens = [n for n in graph.spec.inputs if isinstance(graph.shape(n), TokensShape)]
    if not tokens:
        raise EmbedError(
            f"model {graph.spec.name or '(unnamed)'} has no token input (its inputs: "
            f"{', '.join(graph.spec.inputs)}), so no token embedding table"
        )
    for node_id in graph.order:
        info = graph.nodes[node_id]
        if info.op == "embed" and info.inputs[0] == tokens[0]:
            weight = getattr(model, node_id).weight
            return tokens[0], weight.detach().float().cpu().numpy()
    raise EmbedError(f"no embed node reads the token input {tokens[0]!r}")


# ----------------------------------------------------------------------------- what is read


def _reader(graph: Graph, node: str | None, pool: str | None) -> _Reader:
    """Check the request against the spec and decide what to read."""
    if pool is not None and pool not in POOLS:
        raise EmbedError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
    if node is not None:
        return _node_reader(graph, node, pool)
    outputs = graph.spec.outputs
    if len(outputs) != 1:
        raise EmbedError(
            f"the spec has {len(outputs)} outputs ({', '.join(outputs)}), so no one head to read "
            "from; name the node to embed (node=...)"
        )
    out = graph.nodes[outputs[0]]
    heads = _classify_heads(graph, out.id)
    if heads:
        _no_pool(pool, f"the classify head {out.id!r}")
        dims = {_head_dim(graph, h) for h in heads}
        if len(dims) != 1:
            raise EmbedError(f"the heads of {out.id!r} read vectors of different widths {dims}")
        return _Reader("head", heads, dims.pop())
    if out.op == "lm_head":
        _no_pool(pool, f"the lm_head {out.id!r}")
        shape = graph.shape(out.inputs[0])
        assert isinstance(shape, SeqShape)
        return _Reader("last", (out.id,), shape.dim)
    if isinstance(out.shape, SeqShape | VecShape):
        return _node_reader(graph, out.id, pool)
    raise EmbedError(
        f"the output {out.id!r} ({out.op}) is neither a head nor a sequence; name the node "
        "to embed (node=...)"
    )


def _node_reader(graph: Graph, node: str, pool: str | None) -> _Reader:
    if node not in graph.nodes:
        raise EmbedError(f"unknown node {node!r}; the spec's nodes are {', '.join(graph.nodes)}")
    info = graph.nodes[node]
    shape = info.shape
    kind = "input" if info.op == "input" else "node"
    if isinstance(shape, VecShape):
        if pool is not None:
            raise EmbedError(
                f"node {node!r} is already one vector per sample (B, {shape.dim}): it has no "
                f"token axis to pool with {pool!r}; leave pool out"
            )
        return _Reader(kind, (node,), shape.dim)
    if isinstance(shape, SeqShape):
        chosen = pool or ("cls" if shape.n_cls > 0 else "mean")
        return _Reader(kind, (node,), shape.dim, chosen, shape.n_cls)
    what = "token ids (B, T)" if isinstance(shape, TokensShape) else "images (B, C, H, W)"
    assert isinstance(shape, TokensShape | ImageShape)
    after = [n for n, i in graph.nodes.items() if node in i.inputs]
    raise EmbedError(
        f"node {node!r} is an input of {what}, not a sequence of vectors: it has no token axis "
        f"to pool; embed a node that reads it ({', '.join(after) or 'none'}) or one after"
    )


def _no_pool(pool: str | None, head: str) -> None:
    if pool is not None:
        raise EmbedError(
            f"pool={pool!r} applies to a node's output (node=...); {head} reads its own vector"
        )


def _classify_heads(graph: Graph, output: str) -> tuple[str, ...]:
    """The classify heads the output is, or averages (DeiT's two heads); () for other outputs."""
    info = graph.nodes[output]
    if info.op == "classify":
        return (output,)
    if info.op == "average" and all(graph.nodes[i].op == "classify" for i in info.inputs):
        return tuple(info.inputs)
    return ()


def _head_dim(graph: Graph, head: str) -> int:
    shape = graph.shape(graph.nodes[head].inputs[0])
    assert isinstance(shape, SeqShape | VecShape)
    return shape.dim


def _read(reader: _Reader, tap: _Tap) -> Tensor:
    """The `(B, D)` vectors ``reader`` asks for, from what the forward left in ``tap``."""
    if reader.kind == "head":
        vectors = [tap.head_inputs[h] for h in reader.nodes]
        return vectors[0] if len(vectors) == 1 else torch.stack(vectors).mean(dim=0)
    node = reader.nodes[0]
    if reader.kind == "last":
        return Pool("last")(tap.head_inputs[node], tap.masks[node])
    value = tap.values[node]
    if reader.pool is None:
        return value
    if reader.pool == "cls":
        return value[:, 0]
    return Pool("mean", reader.n_cls)(value, tap.masks[node])


# --------------------------------------------------------------------------- reading a forward


def _input_masks(graph: Graph, inputs: dict[str, Tensor]) -> dict[str, Tensor | None]:
    """Each input's padding mask as the generated forward computes it: ``<input>_mask``, and
    for token ids with a ``pad_id`` the tokens that are not padding."""
    masks: dict[str, Tensor | None] = {}
    for name in graph.spec.inputs:
        shape = graph.shape(name)
        mask = inputs.get(f"{name}_mask")
        if isinstance(shape, TokensShape) and shape.pad_id is not None and name in inputs:
            real = inputs[name] != shape.pad_id
            mask = real if mask is None else real & mask
        masks[name] = mask
    return masks


@contextlib.contextmanager
def _tapping(model: CompiledModel, reader: _Reader) -> Iterator[_Tap]:
    """Hooks on every node's module recording its padding mask (and the output of the node
    ``reader`` reads), and on the read heads' first layer recording their input."""
    graph = model.graph
    tap = _Tap()
    read = set(reader.nodes) if reader.kind == "node" else set()
    handles: list[Any] = []
    wrapped: list[Stack] = []
    try:
        for node_id in graph.order:
            module = getattr(model, node_id)
            if isinstance(module, Classify):  # a vector input reaches `fc` without `forward`
                handles.append(module.fc.register_forward_hook(_keep_output(tap, node_id, read)))
                continue
            hook = _after_node(tap, graph, node_id, node_id in read)
            handles.append(module.register_forward_hook(hook))
            if isinstance(module, Stack):
                module.forward_tokens = _reporting(module, tap, node_id, node_id in read)  # type: ignore[method-assign]
                wrapped.append(module)
        if reader.kind in ("head", "last"):
            for head in reader.nodes:
                handles.append(_head_layer(model, head).register_forward_pre_hook(
                    _keep_input(tap, head)
                ))  # fmt: skip
        yield tap
    finally:
        for handle in handles:
            handle.remove()
        for stack in wrapped:
            del stack.forward_tokens


def _head_layer(model: CompiledModel, head: str) -> nn.Module:
    """The first layer of a head, whose input is the vector it reads."""
    module = getattr(model, head)
    if isinstance(module, Classify):
        return module.fc if module.pre_logits is None else module.pre_logits
    return module  # an lm_head: its input is the sequence it reads


def _after_node(tap: _Tap, graph: Graph, node_id: str, keep: bool) -> Callable[..., None]:
    info = graph.nodes[node_id]
    source = info.inputs[0] if info.inputs else None

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if node_id in tap.reported:  # its forward_tokens said it already
            return
        if isinstance(output, tuple):  # (value, mask, ...): cls_token, combine, token_prune
            value, mask = output[0], output[1]
        else:  # a map or a plain stack keeps its input's mask
            value, mask = output, tap.masks.get(source) if source is not None else None
        tap.masks[node_id] = mask
        if keep:
            tap.values[node_id] = value

    return hook


def _reporting(stack: Stack, tap: _Tap, node_id: str, keep: bool) -> Callable[..., Any]:
    """``stack.forward_tokens`` recording its output and mask (the pruned tokens' mask)."""
    method = type(stack).forward_tokens

    def forward_tokens(*args: Any, **kwargs: Any) -> Any:
        result = method(stack, *args, **kwargs)
        tap.masks[node_id] = result[1]
        tap.reported.add(node_id)
        if keep:
            tap.values[node_id] = result[0]
        return result

    return forward_tokens


def _keep_output(tap: _Tap, node_id: str, read: set[str]) -> Callable[..., None]:
    def hook(module: nn.Module, args: Any, output: Tensor) -> None:
        tap.masks[node_id] = None
        if node_id in read:
            tap.values[node_id] = output

    return hook


def _keep_input(tap: _Tap, head: str) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        tap.head_inputs[head] = args[0]

    return hook


__all__ = ["POOLS", "EmbedError", "embed", "embed_dim", "embed_rows", "token_table"]
