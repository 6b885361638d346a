"""The compiled model's ``forward``, written as Python source: one statement per node.

``EMIT`` holds one function per op that writes its node's lines; a ``ForwardWriter`` carries
what they share: the variable holding each node's value, padding mask and pruning state. The
source is shown by ``arch compile --show-code``; its helpers (input checks, masks) are the
``RUNTIME`` names, prefixed ``__`` so that no spec id or input name can shadow them.
"""

from __future__ import annotations

import linecache
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from archlab.compiler.nn.pruning import STAGES, TokenState
from archlab.compiler.pruning import state_carriers
from archlab.specs import SpecError, spec_hash
from archlab.specs.analysis import (
    PASS_THROUGH_OPS,
    Graph,
    ImageShape,
    NodeInfo,
    SeqShape,
    TokensShape,
    VecShape,
    has_pruning,
    upstream_through,
)
from archlab.specs.models import Spec

Forward = Callable[..., Any]


@dataclass
class ForwardWriter:
    """What the per-op emitters share while ``forward`` is written: for each node so far the
    variable holding its value, its padding mask (``"None"`` for none) and its pruning state."""

    graph: Graph
    value_of: dict[str, str] = field(default_factory=dict)
    mask_of: dict[str, str] = field(default_factory=dict)
    state_of: dict[str, str] = field(default_factory=dict)
    #: stacks whose last attention a later ``token_prune`` node reads, and what of it
    needs: dict[str, str] = field(default_factory=dict)
    #: the nodes whose output carries the pruning state (``pruning.state_carriers``)
    carriers: set[str] = field(default_factory=set)
    #: node -> (value, state) variables returned by a trace
    traced: dict[str, tuple[str, str]] = field(default_factory=dict)

    def values(self, info: NodeInfo) -> list[str]:
        return [self.value_of[r] for r in info.inputs]

    def masks(self, info: NodeInfo) -> list[str]:
        return [self.mask_of[r] for r in info.inputs]

    def state_in(self, info: NodeInfo) -> str:
        return self.state_of[info.inputs[0]] if info.inputs else "None"


EmitFn = Callable[[ForwardWriter, NodeInfo], list[str]]


def generate_forward(spec: Spec, graph: Graph) -> tuple[Forward, str]:
    """``forward`` as a function (for the model class to take as its method) and its source."""
    writer = ForwardWriter(graph, needs=attention_needs(graph), carriers=state_carriers(graph))
    lines = signature_lines(spec, graph, writer)
    for node_id in graph.order:
        info = graph.nodes[node_id]
        lines.append(f"    # {node_id}: {info.op} -> {info.shape}")
        writer.state_of[node_id] = "None"
        lines += EMIT[info.op](writer, info)
        writer.value_of[node_id] = f"__v_{node_id}"
    lines += return_lines(spec, graph, writer)
    source = "\n".join(lines) + "\n"
    filename = f"<archlab forward {spec.name or 'spec'} {spec_hash(spec)[:12]}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = dict(RUNTIME)
    exec(
        compile(source, filename, "exec"), namespace
    )  # our own generated code; ids are validated identifiers
    return namespace["forward"], source


def signature_lines(spec: Spec, graph: Graph, writer: ForwardWriter) -> list[str]:
    """The ``def`` line and the checks of the inputs; records each input's value and mask."""
    seq_inputs = [
        n for n, i in graph.nodes.items() if i.op == "input" and not isinstance(i.shape, ImageShape)
    ]
    names = list(spec.inputs)
    trace_param = ["*", "__trace=False"] if has_pruning(graph) else []
    params = ", ".join(
        names + [f"{n}_mask: Tensor | None = None" for n in seq_inputs] + trace_param
    )
    lines = [f"def forward(self, {params}):"]
    for name in names:
        shape = graph.shape(name)
        if isinstance(shape, TokensShape):
            lines.append(f"    __check_tokens({name}, {name!r}, {shape.length}, {name}_mask)")
            if shape.pad_id is not None:
                lines.append(f"    {name}_mask = __pad_mask({name}, {shape.pad_id}, {name}_mask)")
            writer.mask_of[name] = f"{name}_mask"
        elif isinstance(shape, ImageShape):
            lines.append(
                f"    __check_image({name}, {name!r}, ({shape.channels}, {shape.height}, {shape.width}))"
            )
            writer.mask_of[name] = "None"
        else:
            assert isinstance(shape, SeqShape)
            lines.append(
                f"    __check_features({name}, {name!r}, {shape.length}, {shape.dim}, {name}_mask)"
            )
            writer.mask_of[name] = f"{name}_mask"
        writer.value_of[name] = name
        writer.state_of[name] = "None"  # each sequence's pruning state, if it has one
    return lines


def return_lines(spec: Spec, graph: Graph, writer: ForwardWriter) -> list[str]:
    """The outputs (one tensor, or a dict by node id), and with ``__trace`` the pruning states."""
    value_of = writer.value_of
    if len(spec.outputs) == 1:
        result = value_of[spec.outputs[0]]
    else:
        result = "{" + ", ".join(f"{o!r}: {value_of[o]}" for o in spec.outputs) + "}"
    lines = []
    if has_pruning(graph):
        states = ", ".join(f"{n!r}: {s}" for n, (_, s) in writer.traced.items())
        values = ", ".join(f"{n!r}: {val}" for n, (val, _) in writer.traced.items())
        lines.append("    if __trace:")
        lines.append(f"        return {result}, ({{{states}}}, {{{values}}})")
    lines.append(f"    return {result}")
    return lines


# ----------------------------------------------------------------------------- one emitter per op


def emit_map(w: ForwardWriter, info: NodeInfo) -> list[str]:
    """A per-token map (embeddings, positions, norm, dropout, LM head) keeps the input's mask;
    norm and dropout also keep its pruning state."""
    node_id = info.id
    w.mask_of[node_id] = w.masks(info)[0]
    if info.op in PASS_THROUGH_OPS:
        w.state_of[node_id] = w.state_in(info)
    return [f"    __v_{node_id} = self.{node_id}({w.values(info)[0]})"]


def emit_cls_token(w: ForwardWriter, info: NodeInfo) -> list[str]:
    node_id = info.id
    w.mask_of[node_id] = f"__m_{node_id}"
    return [
        f"    __v_{node_id}, __m_{node_id} = self.{node_id}({w.values(info)[0]}, {w.masks(info)[0]})"
    ]


def emit_stack(w: ForwardWriter, info: NodeInfo) -> list[str]:
    """An encoder or decoder: plainly, or through ``forward_tokens`` where it carries the pruning
    state (it prunes, or takes a pruned sequence) or a later ``token_prune`` node reads its last
    attention."""
    node_id = info.id
    v, m, st = f"__v_{node_id}", f"__m_{node_id}", f"__s_{node_id}"
    x, mask, state_in = w.values(info)[0], w.masks(info)[0], w.state_in(info)
    extra = ""
    if info.stack is not None and info.stack.memory is not None:
        mem = info.stack.memory
        extra = f", memory={w.value_of[mem]}, memory_mask={w.mask_of[mem]}"
    if node_id in w.carriers or node_id in w.needs:
        need = repr(w.needs.get(node_id))
        w.mask_of[node_id], w.state_of[node_id] = m, st
        w.traced[node_id] = (v, st)
        return [
            f"    {v}, {m}, {st}, __a_{node_id} = self.{node_id}.forward_tokens({x}, "
            f"{mask}{extra}, state={state_in}, trace=__trace, need={need})"
        ]
    w.mask_of[node_id] = mask
    return [f"    {v} = self.{node_id}({x}, {mask}{extra})"]


def emit_token_prune(w: ForwardWriter, info: NodeInfo) -> list[str]:
    node_id = info.id
    v, m, st = f"__v_{node_id}", f"__m_{node_id}", f"__s_{node_id}"
    attention = ""
    if info.spec.method in ("attention_topk", "merge"):
        attention = f"__a_{stack_behind(w.graph, info.inputs[0])}, "
    w.mask_of[node_id], w.state_of[node_id] = m, st
    w.traced[node_id] = (v, st)
    x, mask, state_in = w.values(info)[0], w.masks(info)[0], w.state_in(info)
    return [f"    {v}, {m}, {st} = self.{node_id}({x}, {mask}, {state_in}, {attention}__trace)"]


def emit_head(w: ForwardWriter, info: NodeInfo) -> list[str]:
    """``pool`` and ``classify``: a vector input goes straight to the linear layer; a sequence
    is pooled over its real tokens (less those a DynamicViT training policy dropped)."""
    node_id = info.id
    x, mask, state_in = w.values(info)[0], w.masks(info)[0], w.state_in(info)
    w.mask_of[node_id] = "None"
    if isinstance(w.graph.shape(info.inputs[0]), VecShape):
        layer = "logits" if getattr(info.spec, "pre_logits", None) is not None else "fc"
        return [f"    __v_{node_id} = self.{node_id}.{layer}({x})"]
    if state_in != "None":  # pool only the tokens a DynamicViT training policy keeps
        return [f"    __v_{node_id} = self.{node_id}({x}, __kept_mask({mask}, {state_in}))"]
    return [f"    __v_{node_id} = self.{node_id}({x}, {mask})"]


def emit_combine(w: ForwardWriter, info: NodeInfo) -> list[str]:
    """``add``, ``average`` and ``concat``: several inputs and their masks in, one value and mask out."""
    node_id = info.id
    w.mask_of[node_id] = f"__m_{node_id}"
    ins, ms = ", ".join(w.values(info)), ", ".join(w.masks(info))
    return [f"    __v_{node_id}, __m_{node_id} = self.{node_id}({ins}, masks=({ms},))"]


EMIT: dict[str, EmitFn] = {
    "embed": emit_map,
    "patch_embed": emit_map,
    "cls_token": emit_cls_token,
    "position": emit_map,
    "encoder": emit_stack,
    "decoder": emit_stack,
    "token_prune": emit_token_prune,
    "norm": emit_map,
    "pool": emit_head,
    "classify": emit_head,
    "lm_head": emit_map,
    "add": emit_combine,
    "average": emit_combine,
    "concat": emit_combine,
    "dropout": emit_map,
}


def stack_behind(graph: Graph, ref: str) -> str:
    """The encoder/decoder whose output reaches ``ref`` through norm and dropout nodes."""
    info = upstream_through(graph.nodes, ref)
    assert info is not None  # an analysed graph's references all resolve
    return info.id


def attention_needs(graph: Graph) -> dict[str, str]:
    """Stacks whose last layer's attention a later ``token_prune`` node reads, and what of it."""
    needs: dict[str, str] = {}
    for info in graph.nodes.values():
        need = STAGES[info.spec.method].need if info.op == "token_prune" else None
        if need is not None:
            needs[stack_behind(graph, info.inputs[0])] = need
    return needs


# ------------------------------------------------------------------------ run-time input checks


def _input_error(name: str, message: str) -> SpecError:
    return SpecError([(f"inputs.{name}", message)])


def _check_tokens(x: Tensor, name: str, max_len: int, mask: Tensor | None) -> None:
    if x.dim() != 2:
        raise _input_error(
            name, f"tokens input {name!r} must be (B, T), got shape {tuple(x.shape)}"
        )
    if x.dtype not in (torch.int64, torch.int32):
        raise _input_error(name, f"tokens input {name!r} must be int64 token ids, got {x.dtype}")
    if x.shape[1] > max_len:
        raise _input_error(
            name, f"input {name!r} has {x.shape[1]} tokens, more than max_len {max_len}"
        )
    _check_mask(mask, name, x.shape[0], x.shape[1])


def _check_features(x: Tensor, name: str, max_len: int, dim: int, mask: Tensor | None) -> None:
    if x.dim() != 3 or x.shape[2] != dim:
        raise _input_error(
            name, f"features input {name!r} must be (B, T, {dim}), got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise _input_error(name, f"features input {name!r} must be floating point, got {x.dtype}")
    if x.shape[1] > max_len:
        raise _input_error(
            name, f"input {name!r} has {x.shape[1]} positions, more than max_len {max_len}"
        )
    _check_mask(mask, name, x.shape[0], x.shape[1])


def _check_image(x: Tensor, name: str, chw: tuple[int, int, int]) -> None:
    if x.dim() != 4 or tuple(x.shape[1:]) != chw:
        raise _input_error(
            name,
            f"image input {name!r} must be (B, {', '.join(map(str, chw))}), got shape {tuple(x.shape)}",
        )
    if not x.is_floating_point():
        raise _input_error(name, f"image input {name!r} must be floating point, got {x.dtype}")


def _check_mask(mask: Tensor | None, name: str, B: int, T: int) -> None:
    if mask is None:
        return
    if mask.dtype != torch.bool or tuple(mask.shape) != (B, T):
        raise _input_error(
            name,
            f"{name}_mask must be a bool tensor of shape ({B}, {T}) (True = real token), got {mask.dtype} {tuple(mask.shape)}",
        )


def _pad_mask(ids: Tensor, pad_id: int, mask: Tensor | None) -> Tensor:
    real = ids != pad_id
    return real if mask is None else real & mask


def _kept_mask(mask: Tensor | None, state: TokenState | None) -> Tensor | None:
    """The padding mask less the tokens a DynamicViT training policy dropped (it keeps them in
    the sequence, where inference removes them)."""
    if state is None or state.policy is None:
        return mask
    kept = state.policy > 0
    return kept if mask is None else mask & kept


# Generated code names its own variables and helpers with a leading '__', which spec ids and
# input names may not have, so nothing a spec names can shadow them.
RUNTIME: dict[str, Any] = {
    "Tensor": Tensor,
    "__check_tokens": _check_tokens,
    "__check_features": _check_features,
    "__check_image": _check_image,
    "__pad_mask": _pad_mask,
    "__kept_mask": _kept_mask,
}

__all__ = ["EMIT", "EmitFn", "ForwardWriter", "attention_needs", "generate_forward"]
