"""Chefer et al.'s LRP relevance (``explain_lrp``) through token-pruning stages, batched.

A pruned stack (DynamicViT, EViT, ToMe; ``compiler.nn.pruning``) has a stage before a layer or
between its attention branch and its MLP (``Block.forward_tokens``). Going down the blocks, the
relevance of a stage's output tokens `(B, T', D)` goes back to its input tokens `(B, T, D)` with
the stage's own weights W `(B, T', T)` (new token j = sum_i W_ji x_i; ``stage_weights``):

- a kept token (one source, weight 1; DynamicViT's and EViT's kept rows, in any order, and ToMe's
  unmerged ones) passes its relevance to itself, exactly;
- a merged or fused token splits each feature's relevance among its sources in proportion to the
  positive parts of their contributions (W_ji x_id)^+, the z+ rule of a linear layer with
  non-negative weights: ToMe's merges by the size weights s_i / sum s (sizes in original tokens,
  from the trace's source maps), EViT's fused token by the CLS attention of each token it fused
  (the head mean of the first query's row of that layer's recorded attention: the softmax the
  stage ranked by, written out, so equal to it up to rounding). Where no source adds a positive
  part to a feature (all W_ji x_id <= 0), that feature's relevance goes by the negative parts
  instead, so each stage keeps every sample's total (the z+ rule would drop it); only a feature
  that is exactly 0 in every source loses its relevance;
- a dropped token (DynamicViT; EViT without fusion) is in no output row and gets no relevance.

The per-block maps E_h[(grad A * R_A)^+] `(B, N_b, N_b)` are then combined as the other methods
combine theirs (``explain._relevance``): R = I over the original tokens, the stage's weights with
rows normalised to sum 1 applied where it acts (R = W R), R = R + map R per block: the moves of
every method (kept rows stay, merged rows are size-weighted means, EViT's fused row the
attention-weighted mean of the rows it fused, dropped rows go). So a patch dropped at a stage gets relevance
only through what the blocks below that stage mixed into the tokens that went on.

A block whose attention a stage reads (EViT, ToMe), and every block after a ToMe merge, runs
through ``Block.attend`` and ``feed`` rather than the block's own call, so their input and output are read from their layers' taped
values: the input from ``norm1``'s input (pre-norm) or the attention's ``qkv`` input
(post-norm), the output as ``norm2``'s input plus the MLP branch (pre-norm) or ``norm2``'s
output (post-norm). Each stage's input is taped by a forward hook on the stage. ToMe's
proportional attention (log size added to the scores) is in the recorded attention; the Q K^T
rule passes its relevance to q and k as for any scores. ``token_prune`` nodes outside the stack
are refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from archlab.compiler.nn.block import Block
from archlab.compiler.nn.heads import Classify, LMHead
from archlab.compiler.nn.pruning import AttentionTopK
from archlab.compiler.nn.stack import Stack
from archlab.runners.explain_lrp import (
    Tape,
    attention_relevance,
    block_relevance,
    head_relevance,
    mlp_relevance,
    taping,
)
from archlab.specs.analysis import Graph

#: the per-layer moves of ``explain._moves``: (before the layer, after its attention)
Moves = list[tuple[Tensor | None, Tensor | None]]


def check_stages(graph: Graph, head: str) -> str | None:
    """Why the stages read by ``head`` cannot be followed here (a ``token_prune`` node outside
    the stack: its tokens are not the stack's), or None."""
    nodes = [n for n in graph.upstream(head) if graph.nodes[n].op == "token_prune"]
    if nodes:
        return (
            f"the token_prune node `{nodes[0]}` prunes outside the explained stack; explaining "
            "follows the stages of a stack's own 'prune' (move the stage into the stack's "
            "'prune' to explain the model)"
        )
    return None


@contextlib.contextmanager
def taping_pruned(blocks: list[Block], head: Classify | LMHead, stack: Stack) -> Iterator[Tape]:
    """``explain_lrp.taping`` plus each block's ``norm2`` output and each stage's input tokens
    `(B, T, D)` under ``(layer, "stage_in")``; the hooks go when the context ends."""
    with taping(blocks, head) as tape:
        for i, block in enumerate(blocks):
            tape.keep(block.norm2, (i, "norm2_out"), output=True)
        for i, key in enumerate(stack.stage_at):
            if key is not None and stack.prune is not None:
                tape.keep(stack.prune[key], (i, "stage_in"))
        yield tape


def stage_weights(moves: Moves, stack: Stack, probabilities: list[Tensor]) -> Moves:
    """The weights of each stage `(B, T', T)`, rows summing to 1: ``moves`` with the last row of
    each fusing EViT stage (its fused token; a kept token where nothing was fused, whose one
    source keeps weight 1) taken from the layer's CLS attention `(B, H, T, T)` -> row 0, head
    mean, over the tokens it was made of."""
    out: Moves = []
    for index, (before, after) in enumerate(moves):
        key = stack.stage_at[index]
        stage = stack.prune[key] if stack.prune is not None and key is not None else None
        if after is not None and isinstance(stage, AttentionTopK) and stage.fuse:
            weights = probabilities[index][:, :, 0].mean(dim=1)  # (B, T)
            row = weights * (after[:, -1] > 0)  # (B, T): the fused tokens' attention
            total = row.sum(dim=-1, keepdim=True)
            row = torch.where(total > 0, row / total.clamp(min=1e-30), after[:, -1])
            after = torch.cat([after[:, :-1], row[:, None]], dim=1)
        out.append((before, after))
    return out


def stage_relevance(x: Tensor, weights: Tensor, R: Tensor) -> Tensor:
    """From the relevance of a stage's output tokens to its input tokens ``x`` (the module
    docstring's rule): one-source rows pass R on, others split it by the z+ rule.

    Shape: x `(B, T, D)`, weights `(B, T', T)` non-negative, R `(B, T', D)` -> `(B, T, D)`."""
    single = ((weights > 0).sum(dim=-1) == 1)[..., None]  # (B, T', 1)
    back = weights.transpose(1, 2)  # (B, T, T')
    passed = (back > 0).to(R.dtype) @ R.masked_fill(~single, 0.0)
    R = R.masked_fill(single, 0.0)
    positive, negative = x.clamp(min=0), x.clamp(max=0)
    Z_pos, Z_neg = weights @ positive, weights @ negative  # (B, T', D)
    up = Z_pos > 0
    Z = torch.where(up, Z_pos, Z_neg)
    S = torch.where(Z != 0, R / torch.where(Z != 0, Z, 1.0), 0.0)
    shared = positive * (back @ S.masked_fill(~up, 0.0))
    return passed + shared.add_(negative * (back @ S.masked_fill(up, 0.0)))


def fill_block_values(blocks: list[Block], tape: Tape) -> None:
    """Each block's input ``(i, "x")`` and output ``(i, "z")`` where the block's own call was
    bypassed (``Block.attend`` and ``feed`` run instead), from its layers' taped values."""
    for i, block in enumerate(blocks):
        if tape.get((i, "x")) is None:
            key = "norm1_in" if block.pre_norm else "qkv_in"
            tape.values[(i, "x")] = tape[(i, key)]
        if tape.get((i, "z")) is None:
            if block.pre_norm:
                tape.values[(i, "z")] = tape[(i, "norm2_in")] + tape[(i, "mlp_branch")]
            else:
                tape.values[(i, "z")] = tape[(i, "norm2_out")]


def chefer_maps(
    blocks: list[Block],
    head: Any,
    tape: Tape,
    records: list[list[tuple[Tensor, ...]]],
    grads: tuple[Tensor, ...],
    chosen: Tensor,
    classes: int,
    position: int,
    moves: Moves,
) -> list[Tensor]:
    """Chefer et al.'s map of each block: LRP from the one-hot target down the blocks (a dense
    stack: ``moves`` all ``(None, None)``), through each stage by ``stage_relevance`` with its
    weights (``stage_weights``), the map of block b E_h[(grad A_b * R_A_b)^+] `(B, N_b, N_b)`
    over the tokens its attention saw (``explain._relevance`` makes the product)."""
    fill_block_values(blocks, tape)
    A = records[0][0][0].detach()
    R = head_relevance(head, tape, F.one_hot(chosen, classes).to(A.dtype), position)
    maps: list[Tensor] = [A] * len(blocks)
    for i in reversed(range(len(blocks))):
        A, q, k, v = (t.detach() for t in records[i][0])
        before, after = moves[i]
        if after is None:
            R, R_A = block_relevance(blocks[i], i, tape, R, A, q, k, v)
        else:  # the stage sits between the attention and the MLP
            R = mlp_relevance(blocks[i], i, tape, R)
            R = stage_relevance(tape[(i, "stage_in")], after, R)
            R, R_A = attention_relevance(blocks[i], i, tape, R, A, q, k, v)
        if before is not None:
            R = stage_relevance(tape[(i, "stage_in")], before, R)
        maps[i] = (grads[i] * R_A).clamp(min=0).mean(dim=1)
    return maps


__all__ = [
    "Moves",
    "check_stages",
    "chefer_maps",
    "fill_block_values",
    "stage_relevance",
    "stage_weights",
    "taping_pruned",
]
