"""``archlab.explain``: which input positions made a model decide, from its attention, batched.

While explaining, every self-attention of the explained stack computes its probabilities
explicitly and appends them to its ``record`` (``compiler.nn.attention.Attention.explicit``);
the plain forward keeps its fused kernels. One backward pass of the sum of each sample's target
logit gives every sample its own gradients (``torch.autograd.grad``: no parameter's ``.grad``
is touched), so a batch of B gives exactly what B batches of 1 give.

Methods (A_b: block b's attention `(B, H, N, N)`, ∇A_b: the target logit's gradient with respect
to it, E_h: the mean over heads; q: the row the head reads):

- ``attention``: E_h A_L, row q.
- ``rollout`` (Abnar & Zuidema 2020): M_b = E_h A_b + I with rows normalised to sum 1,
  R = M_L ... M_1, row q.
- ``generic`` (Chefer et al., ICCV 2021): R = I; for each block in order
  R = R + E_h[(∇A_b ⊙ A_b)^+] R; row q.
- ``chefer`` (Chefer et al., CVPR 2021): the same with the LRP relevance of each attention map
  in place of A_b (``explain_lrp``; through an encoder-decoder, ``explain_lrp_seq2seq``;
  through token-pruning stages, ``explain_lrp_prune``).

A pruned stack's relevance is kept over its original tokens: each stage's map (``_moves``) keeps
a kept token's row, makes a merged (ToMe) token's row the size-weighted mean of its sources'
rows and EViT's fused token's row their mean weighted by the CLS attention it fused them with
(``explain_lrp_prune.stage_weights``), and lets a dropped token's row go.

The row q: the CLS token for ``cls``/``first`` pooling (the mean of the two CLS rows for
``distill``), the mean of the real tokens' rows for ``mean``/``max`` pooling, the last real
token for ``last``, and for a language model the position whose next-token logit is explained
(the last by default). Scores leave out the CLS tokens: image patches in row-major order
(``grid``), or tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from archlab.compiler.freeze import FrozenModelError
from archlab.compiler.model import CompiledModel
from archlab.compiler.nn.attention import Attention
from archlab.compiler.nn.linear_attention import LinearAttention
from archlab.compiler.nn.stack import Stack
from archlab.errors import UserInputError
from archlab.runners import explain_lrp_prune as pruning
from archlab.runners import explain_lrp_seq2seq as lrp_seq2seq
from archlab.runners import explain_seq2seq as seq2seq
from archlab.runners.explain_lrp import (
    check_supported,
    taping,
)
from archlab.specs.analysis import ClassifyPlan, Graph, PoolPlan, SeqShape
from archlab.specs.models import PoolMode

METHODS = ("attention", "rollout", "generic", "chefer")


class ExplainError(UserInputError):
    """A model or request the explanation methods cannot serve; the message says why."""


@dataclass(frozen=True)
class Explanation:
    """Relevance of each input position for each sample.

    ``scores`` `(B, N)`: the method's raw values (not normalised) over the input's positions
    without CLS tokens (image patches in row-major order, or tokens); ``grid`` `(h, w)` for
    image inputs; ``target`` `(B,)` the explained class or token; ``method``. For an
    encoder-decoder, ``scores`` are over the source tokens and ``decoder_scores`` over the
    target tokens (``explain_seq2seq``).
    """

    scores: Tensor
    target: Tensor
    method: str
    grid: tuple[int, int] | None = None
    #: an encoder-decoder's relevance over its target tokens `(B, T)` (``scores``: the source's)
    decoder_scores: Tensor | None = None

    def upsample(self, height: int, width: int) -> Tensor:
        """The scores as pixel maps `(B, height, width)` (bilinear), for image inputs."""
        if self.grid is None:
            raise ExplainError("upsample needs an image input's patch grid; these are tokens")
        maps = self.scores.reshape(-1, 1, *self.grid)
        return F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)[:, 0]


@dataclass(frozen=True)
class _Reader:
    """How the explained stack's output is read: the stack, its CLS tokens, the pooling mode
    (None for a language model) and the image grid."""

    stack: str
    n_cls: int
    mode: PoolMode | None
    grid: tuple[int, int] | None
    head: str


def explain(
    model: CompiledModel,
    method: str = "generic",
    target: int | Tensor | None = None,
    position: int = -1,
    start_layer: int = 0,
    **inputs: Tensor,
) -> Explanation:
    """Explain ``model``'s decision on ``inputs`` (by name, with ``<input>_mask``) with
    ``method`` (one of ``METHODS``). ``target``: the class (or next token) per sample, an int or
    `(B,)`; default the predicted one. ``position``: for a language model, the position whose
    next-token logit is explained (the last by default). ``start_layer``: the first block whose
    map enters ``rollout``, ``generic`` and ``chefer`` (0: all; Chefer et al.'s evaluation uses
    1)."""
    if method not in METHODS:
        raise ExplainError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if model.frozen is not None and method in ("generic", "chefer"):
        raise FrozenModelError(
            f"{method} relevance needs gradients, and this model is frozen for inference "
            "(CompiledModel.freeze()): explain a model built without freeze(), or use the "
            "attention or rollout method"
        )
    pair = _encoder_decoder(model.graph)
    if pair is not None:
        if start_layer:
            raise ExplainError("start_layer applies to one stack, not to an encoder-decoder")
        return _explain_seq2seq(model, pair, method, target, position, inputs)
    reader = _reader(model.graph)
    attentions = _attentions(model, reader)
    stack = getattr(model, reader.stack)
    blocks: list[Any] = list(stack.layers)
    if not 0 <= start_layer < len(blocks):
        raise ExplainError(
            f"start_layer {start_layer} is not a block of `{reader.stack}` (0..{len(blocks) - 1})"
        )
    head = getattr(model, reader.head)
    pruned = stack.pruned
    lrp: Any = contextlib.nullcontext()
    outside = pruning.check_stages(model.graph, reader.head)
    if outside is not None:  # its kept tokens would be scored without their places in the grid
        raise ExplainError(f"method {method}: {outside}")
    if method == "chefer":
        problem = check_supported(blocks, head)
        if problem is not None:
            raise ExplainError(f"method chefer: {problem}")
        lrp = pruning.taping_pruned(blocks, head, stack) if pruned else taping(blocks, head)
    was_training = model.training
    model.eval()
    try:
        with (
            _recording(attentions) as records,
            lrp as tape,
            torch.enable_grad(),
        ):
            logits, trace = model.trace_tokens(**inputs)
            if reader.mode is None:  # a language model: (B, T, V) -> the explained position
                logits = logits[:, position]
            chosen = _targets(target, logits)
            probabilities = [r[0][0] for r in records]
            moves = None
            if pruned:  # EViT's fused row by the attention it fused with
                detached = [p.detach() for p in probabilities]
                moves = pruning.stage_weights(
                    _moves(model, reader, trace, detached), stack, detached
                )
            grads = None
            if method in ("generic", "chefer"):
                picked = logits.gather(1, chosen[:, None]).sum()
                grads = torch.autograd.grad(picked, probabilities)
    finally:
        model.train(was_training)
    found: list[Tensor] | None = None
    if method == "chefer":
        assert grads is not None and tape is not None
        with torch.no_grad():  # relevance is arithmetic on what the forward left: no graph
            args = (blocks, head, tape, records, grads, chosen, logits.shape[-1], position)
            # down the blocks, and through a pruned stack's stages with their own weights
            found = pruning.chefer_maps(*args, moves or [(None, None)] * len(blocks))
    relevance = _relevance(
        method, [p.detach() for p in probabilities], grads, moves, start_layer, found
    )
    row = _query(reader, inputs, relevance, position)
    scores = (row[:, None, :] @ relevance)[:, 0, reader.n_cls :]  # (B, N - n_cls)
    return Explanation(scores.detach(), chosen.detach(), method, reader.grid)


def _encoder_decoder(graph: Graph) -> tuple[str, str] | None:
    """(encoder, decoder) when the one output is an lm_head on a decoder that cross-attends
    to an encoder, else None."""
    if len(graph.spec.outputs) != 1 or graph.nodes[graph.spec.outputs[0]].op != "lm_head":
        return None
    above = graph.upstream(graph.spec.outputs[0])
    decoders = [n for n in above if graph.nodes[n].op == "decoder"]
    if len(decoders) != 1:
        return None
    plan = graph.nodes[decoders[0]].stack
    if plan is None or plan.memory is None:
        return None
    encoders = [n for n in graph.upstream(plan.memory) if graph.nodes[n].op == "encoder"]
    return (encoders[-1], decoders[0]) if len(encoders) == 1 else None


def _explain_seq2seq(
    model: CompiledModel,
    pair: tuple[str, str],
    method: str,
    target: int | Tensor | None,
    position: int,
    inputs: dict[str, Tensor],
) -> Explanation:
    """An encoder-decoder's next token at ``position``, by the generic rules
    (``explain_seq2seq``); ``chefer`` makes its maps by LRP (``explain_lrp_seq2seq``)."""
    encoder, decoder = pair
    blocks: tuple[list[Any], list[Any]] = (
        list(getattr(model, encoder).layers),
        list(getattr(model, decoder).layers),
    )
    head = getattr(model, model.graph.spec.outputs[0])
    if method == "chefer":
        problem = lrp_seq2seq.check_supported(model.graph, pair, *blocks, head)
        if problem is not None:
            raise ExplainError(f"method chefer: {problem}")
    groups = [
        seq2seq.attentions_of(model, encoder, False, ExplainError),
        seq2seq.attentions_of(model, decoder, False, ExplainError),
        seq2seq.attentions_of(model, decoder, True, ExplainError),
    ]
    attentions = [a for group in groups for a in group]
    was_training = model.training
    model.eval()
    try:
        with (
            _recording(attentions) as records,
            lrp_seq2seq.taping(*blocks, head)
            if method == "chefer"
            else contextlib.nullcontext() as tapes,
            torch.enable_grad(),
        ):
            logits = model(**inputs)[:, position]
            chosen = _targets(target, logits)
            probabilities = [r[0][0] for r in records]
            grads = None
            if method in ("generic", "chefer"):
                picked = logits.gather(1, chosen[:, None]).sum()
                grads = torch.autograd.grad(picked, probabilities)
    finally:
        model.train(was_training)
    probabilities = [p.detach() for p in probabilities]
    cut = [len(groups[0]), len(groups[0]) + len(groups[1])]
    with torch.no_grad():
        if method == "attention":
            R_ts, R_tt = probabilities[-1].mean(dim=1), probabilities[cut[1] - 1].mean(dim=1)
        elif method == "chefer":
            assert grads is not None and tapes is not None
            found = lrp_seq2seq.relevance(
                *blocks, head, tapes, [r[0] for r in records], grads, chosen, position
            )
            R_ts, R_tt = seq2seq.relevance(found.encoder, found.decoder, found.cross)
        else:
            maps = seq2seq.maps(method, probabilities, grads)
            R_ts, R_tt = seq2seq.relevance(maps[: cut[0]], maps[cut[0] : cut[1]], maps[cut[1] :])
    row = position % R_tt.shape[-1]
    return Explanation(
        R_ts[:, row].detach(), chosen.detach(), method, None, decoder_scores=R_tt[:, row].detach()
    )


def _reader(graph: Graph) -> _Reader:
    """The stack whose attention explains the output, and how the output reads it."""
    spec = graph.spec
    if len(spec.outputs) != 1:
        raise ExplainError("explaining needs a spec with one output (a classifier or an lm_head)")
    head = spec.outputs[0]
    info = graph.nodes[head]
    stacks = [n for n in graph.upstream(head) if graph.nodes[n].op in ("encoder", "decoder")]
    if not stacks:
        raise ExplainError(f"the spec has no attention before its output `{head}` to explain")
    if len(stacks) > 1:
        raise ExplainError(
            f"the output `{head}` reads {len(stacks)} stacks ({', '.join(stacks)}); explaining "
            "encoder-decoders and chained stacks is not supported yet: one encoder or decoder"
        )
    stack = graph.nodes[stacks[0]]
    assert stack.stack is not None
    shape = stack.shape
    assert isinstance(shape, SeqShape)
    if info.op == "lm_head":
        return _Reader(stack.id, 0, None, None, head)
    mode: PoolMode | None = None
    for ref in reversed(graph.upstream(head)):
        plan = graph.nodes[ref].plan
        if isinstance(plan, ClassifyPlan | PoolPlan) and plan.mode is not None:
            mode = plan.mode
            break
    if info.op != "classify" or mode is None:
        raise ExplainError(
            f"explaining needs a classify or lm_head output that pools the stack; `{head}` is "
            f"a {info.op} node"
        )
    assert mode in get_args(PoolMode)
    first = graph.shape(stack.inputs[0])  # the grid before any pruning
    grid = first.grid if isinstance(first, SeqShape) else None
    return _Reader(stack.id, shape.n_cls, mode, grid, head)


def _attentions(model: CompiledModel, reader: _Reader) -> list[Attention | LinearAttention]:
    stack = getattr(model, reader.stack)
    assert isinstance(stack, Stack)
    attentions: list[Attention | LinearAttention] = []
    for index, layer in enumerate(stack.layers):
        attention = layer.attention
        if not isinstance(attention, Attention | LinearAttention):
            raise ExplainError(f"layer {index} of `{reader.stack}` has no attention to read")
        attentions.append(attention)
    return attentions


@contextlib.contextmanager
def _recording(
    attentions: list[Attention | LinearAttention],
) -> Iterator[list[list[tuple[Tensor, ...]]]]:
    """Each attention records its probabilities and operands while the block runs; removed
    afterwards."""
    records: list[list[tuple[Tensor, ...]]] = [[] for _ in attentions]
    for attention, record in zip(attentions, records, strict=True):
        attention.record = record
    try:
        yield records
    finally:
        for attention in attentions:
            attention.record = None


def _targets(target: int | Tensor | None, logits: Tensor) -> Tensor:
    """The explained class of each sample `(B,)`: given, or the predicted one."""
    B, C = logits.shape
    if target is None:
        return logits.argmax(dim=-1)
    chosen = torch.as_tensor(target, device=logits.device).long().reshape(-1)
    if chosen.numel() == 1:
        chosen = chosen.expand(B)
    if chosen.shape != (B,):
        raise ExplainError(
            f"target must be one class or one per sample ({B}), got {chosen.numel()}"
        )
    if int(chosen.min()) < 0 or int(chosen.max()) >= C:
        raise ExplainError(
            f"target {chosen.tolist()} lies outside the output's {C} classes (0..{C - 1})"
        )
    return chosen


def _query(reader: _Reader, inputs: dict[str, Tensor], relevance: Tensor, position: int) -> Tensor:
    """The weights of the row the head reads, `(B, N)` over the stack's final tokens:
    one-hot, or a mean over tokens."""
    B, N, _ = relevance.shape
    first = relevance
    row = torch.zeros(B, N, device=first.device, dtype=first.dtype)
    mask = _real_tokens(reader, inputs, B, N, first.device)
    if reader.mode in ("cls", "first"):
        row[:, 0] = 1.0
    elif reader.mode == "distill":
        row[:, :2] = 0.5
    elif reader.mode in ("mean", "max"):
        real = mask.clone()
        real[:, : reader.n_cls] = False
        row = real.to(row.dtype) / real.sum(dim=1, keepdim=True).clamp(min=1)
    else:  # last real token, or the explained position of a language model
        if reader.mode == "last":
            index = mask.long().cumsum(dim=1).argmax(dim=1)
        else:
            index = torch.full((B,), position % N, device=first.device)
        row[torch.arange(B), index] = 1.0
    return row


def _real_tokens(reader: _Reader, inputs: dict[str, Tensor], B: int, N: int, device: Any) -> Tensor:
    """True for the real tokens of the stack's sequence (padding from ``<input>_mask``)."""
    masks = [
        v for k, v in inputs.items() if k.endswith("_mask") and v.shape[-1] + reader.n_cls == N
    ]
    real = torch.ones(B, N, dtype=torch.bool, device=device)
    if masks:
        real[:, reader.n_cls :] = masks[0].to(device)
    return real


def _moves(
    model: CompiledModel, reader: _Reader, trace: Any, probabilities: list[Tensor]
) -> list[tuple[Tensor | None, Tensor | None]]:
    """For each layer, the maps `(B, N_new, N_prev)` of the pruning stage acting before it or
    after its attention (None where none acts): a new token's row is the size-weighted mean
    of the rows of the tokens it was made of (one token when kept, several when merged); a
    dropped token's row goes. Built from the trace's source maps (original token -> slot)."""
    stack = getattr(model, reader.stack)
    records = {r.name: r for r in trace.stages}
    B = probabilities[0].shape[0]
    N0 = next(r.source.shape[1] for r in trace.stages if r.source is not None)
    previous = torch.arange(N0, device=probabilities[0].device).expand(B, N0)
    width = N0  # tokens before the next stage
    moves: list[tuple[Tensor | None, Tensor | None]] = []
    for index, key in enumerate(stack.stage_at):
        if key is None:
            moves.append((None, None))
            continue
        record = records[f"{reader.stack}.prune.{index}"]
        if record.source is None or record.index is None:
            raise ExplainError(f"stage {record.name} left no source map to follow")
        present = (previous >= 0) & (record.source >= 0)
        move = probabilities[0].new_zeros(B, record.index.shape[1], width)
        rows, prev, new = (
            present.nonzero(as_tuple=True)[0],
            previous[present],
            record.source[present],
        )
        move.index_put_((rows, new, prev), torch.ones_like(prev, dtype=move.dtype), accumulate=True)
        move = move / move.sum(dim=-1, keepdim=True).clamp(min=1)
        previous, width = record.source, record.index.shape[1]
        after = stack.prune[key].need is not None  # acts between attention and MLP
        moves.append((None, move) if after else (move, None))
    return moves


def _relevance(
    method: str,
    probabilities: list[Tensor],
    grads: tuple[Tensor, ...] | None,
    moves: list[tuple[Tensor | None, Tensor | None]] | None = None,
    start_layer: int = 0,
    maps: list[Tensor] | None = None,
) -> Tensor:
    """The `(B, N, N0)` relevance matrix of ``method`` from every block's probabilities: rows
    over the stack's final tokens, columns over its first (the same without pruning).
    ``maps``: each block's map `(B, N_b, N_b)` where it is given (``chefer``), in place of
    generic's E_h[(grad A * A)^+]."""
    B, _, N, _ = probabilities[0].shape
    first = probabilities[0]
    if moves and moves[0][0] is not None:
        N = moves[0][0].shape[-1]

    def eye(n: int) -> Tensor:
        return torch.eye(n, device=first.device, dtype=first.dtype).expand(B, n, n)

    R = eye(N)
    last = len(probabilities) - 1
    for index, A in enumerate(probabilities):
        before, after = moves[index] if moves else (None, None)
        if before is not None:
            R = before @ R
        if method == "attention":
            R = A.mean(dim=1) @ R if index == last else R
        elif index < start_layer:  # below the first block that counts: the tokens only move
            pass
        elif method == "rollout":
            M = A.mean(dim=1) + eye(A.shape[-1])
            R = (M / M.sum(dim=-1, keepdim=True)) @ R
        elif maps is not None:
            R = R + maps[index] @ R
        else:
            assert grads is not None
            R = R + (grads[index] * A).clamp(min=0).mean(dim=1) @ R
        if after is not None:
            R = after @ R
    return R


__all__ = ["METHODS", "ExplainError", "Explanation", "explain"]
