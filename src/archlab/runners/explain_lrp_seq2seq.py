"""Chefer et al.'s LRP relevance (CVPR 2021) through an encoder-decoder, batched.

The rules are ``explain_lrp``'s (z+ for linear layers without their bias, identity for norms,
activations, softmax and dropout, halved gradient-times-input shares for A V and Q K^T, residual
sums split per sample by their shares); this module carries them through cross-attention and
from the decoder into the encoder. Per sample, from the one-hot target `(B, V)`:

- the ``lm_head`` at the explained position gives the decoder's output tokens `(B, T, D)` their
  relevance (``head_relevance``); a final norm (and dropout) between them passes it on;
- each decoder block, last first: its MLP branch (``mlp_relevance``), then its cross-attention
  branch, then its self-attention branch (``attention_relevance``). The cross-attention
  y = x + c (post-norm: norm(x + c)), c = out(A V), A = softmax(q(x) k(m)^T), splits R_y
  between x and c; out's z+ rule gives A V its relevance, which A and V share by halves, and
  A's half goes to q and k by halves again; q's reaches the decoder stream x through the
  ``q`` projection, k's and v's reach the memory m `(B, S, Dm)` through the ``kv`` projection;
- the memory's relevance, summed over the decoder's layers, is the encoder output's (a final
  norm and dropout between them pass it on), and goes down the encoder's blocks
  (``block_relevance``).

Every map, encoder self-attention `(B, S, S)`, decoder self-attention `(B, T, T)` and decoder
cross-attention `(B, T, S)`, gets Ā = E_h[(∇A ⊙ R_A)^+], R_A the relevance of its
probabilities (after the halving), and the maps combine by the generic rules of
``explain_seq2seq.relevance`` (R_ss, R_tt, R_ts with R_ts += R̄_ttᵀ Ā R̄_ss). The relevance
that reaches the stacks' inputs (``Relevance.source``, ``.target``) keeps each sample's total
of 1 up to where a z+ denominator or an attention product is exactly 0: linear biases and T5's
relative position bias (additive, inside the scores) get none, and the rules spread it over the
inputs instead.

Supported: blocks ``explain_lrp.check_supported`` accepts (T5's relative position bias allowed),
softmax cross-attention with separate ``q`` and ``kv`` projections (grouped heads too), and
only norms and dropout between the decoder and the ``lm_head`` and between the encoder and the
decoder's memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from archlab.compiler.nn.attention import Attention
from archlab.compiler.nn.block import Block
from archlab.compiler.nn.heads import LMHead
from archlab.runners import explain_lrp as lrp
from archlab.runners.explain_lrp import (
    Tape,
    _taped_linear,
    product_relevance,
    sum_relevance,
)
from archlab.specs.analysis import Graph
from archlab.specs.analysis.plans import upstream_through


@dataclass(frozen=True)
class Tapes:
    """What the explained forward left behind: the encoder's blocks, and the decoder's blocks
    (with their cross-attention) and the head."""

    encoder: Tape
    decoder: Tape


@dataclass(frozen=True)
class Relevance:
    """Chefer's maps of every attention and the relevance at the stacks' inputs.

    ``encoder`` `(B, S, S)` and ``decoder`` `(B, T, T)` self-attention maps and ``cross``
    `(B, T, S)` cross-attention maps, one per layer in order; ``source`` `(B, S, D)` and
    ``target`` `(B, T, D)`: the relevance of the encoder's and the decoder's input."""

    encoder: list[Tensor]
    decoder: list[Tensor]
    cross: list[Tensor]
    source: Tensor
    target: Tensor


def check_supported(
    graph: Graph, pair: tuple[str, str], encoder: list[Block], decoder: list[Block], head: Any
) -> str | None:
    """Why the rules here cannot explain this encoder-decoder (stacks ``pair``, their blocks,
    the ``lm_head``), or None."""
    enc_id, dec_id = pair
    if not isinstance(head, LMHead):
        return "chefer explains an encoder-decoder's lm_head"
    plan = graph.nodes[dec_id].stack
    assert plan is not None and plan.memory is not None
    for ref, stack, what in (
        (graph.nodes[graph.spec.outputs[0]].inputs[0], dec_id, "the lm_head reads"),
        (plan.memory, enc_id, f"`{dec_id}` cross-attends to"),
    ):
        found = upstream_through(graph.nodes, ref)
        if found is None or found.id != stack:
            return f"{what} `{stack}` through more than norms and dropout"
    for stack, blocks in ((enc_id, encoder), (dec_id, decoder)):
        problem = lrp.check_supported(blocks, head, seq2seq=True)
        if problem is not None:
            return f"`{stack}`: {problem}"
    for index, block in enumerate(decoder):
        cross = block.cross_attention
        if not isinstance(cross, Attention) or not cross.is_cross:
            return f"`{dec_id}`: layer {index} has no softmax cross-attention"
    return None


@contextlib.contextmanager
def taping(encoder: list[Block], decoder: list[Block], head: LMHead) -> Iterator[Tapes]:
    """``explain_lrp.taping`` of each stack, the decoder's blocks with their cross-attention's
    projections, norm input and branch output (the encoder's tape keeps the head's input too,
    unread: the decoder's is the one ``relevance`` starts from)."""
    with lrp.taping(encoder, head) as enc, lrp.taping(decoder, head) as dec:
        for i, block in enumerate(decoder):
            cross: Any = block.cross_attention
            for name, layer in (("cross_q", cross.q), ("cross_kv", cross.kv), ("cross_out", cross.out)):  # fmt: skip
                dec.keep(layer, (i, f"{name}_in"))
                dec.keep(layer, (i, f"{name}_out"), output=True)
            dec.keep(block.norm_cross, (i, "norm_cross_in"))
            dec.keep(block.ls_cross, (i, "cross_branch"), output=True)  # in eval: what is added
        yield Tapes(enc, dec)  # lrp.taping removes every hook, these too


def cross_relevance(
    block: Block, i: int, tape: Tape, R_y: Tensor, A: Tensor, q: Tensor, k: Tensor, v: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """From the relevance of the decoder stream after block ``i``'s cross-attention branch
    `(B, T, D)` (y = x + c(norm_cross(x), m), or norm_cross(x + c(x, m)) post-norm) to the
    stream before it `(B, T, D)`, the memory m `(B, S, Dm)` and the attention probabilities
    `(B, H, T, S)`. A `(B, H, T, S)`, q `(B, H, T, E)`, k and v `(B, K, S, E)` as recorded."""
    c = tape[(i, "cross_branch")]
    x = tape[(i, "norm_cross_in")] if block.pre_norm else tape[(i, "norm_cross_in")] - c
    R_x, R_c = sum_relevance(x, c, R_y)
    attention: Any = block.cross_attention
    B, T, _ = R_c.shape
    S = k.shape[2]
    H, E, K = attention.heads, attention.head_dim, attention.kv_heads
    R_ctx = _taped_linear(tape, i, "cross_out", attention.out, R_c)
    R_ctx = R_ctx.view(B, T, H, E).transpose(1, 2)  # (B, H, T, E)
    kk, vv = attention.repeat_kv(k, v)  # (B, H, S, E)
    R_A, R_V = product_relevance(A, vv, R_ctx)
    R_Q, R_K = product_relevance(q, kk.transpose(-2, -1), R_A)  # softmax: identity
    R_K = R_K.transpose(-2, -1)  # (B, H, S, E)
    if K < H:  # grouped heads: each key-value head gathers its queries' shares
        R_K = R_K.view(B, K, H // K, S, E).sum(2)
        R_V = R_V.view(B, K, H // K, S, E).sum(2)
    R_x = R_x + _taped_linear(
        tape, i, "cross_q", attention.q, R_Q.transpose(1, 2).reshape(B, T, H * E)
    )
    packed = torch.cat(
        [t.transpose(1, 2).reshape(B, S, K * E) for t in (R_K, R_V)], dim=-1
    )  # (B, S, 2 K E), the kv layout: keys, then values
    return R_x, _taped_linear(tape, i, "cross_kv", attention.kv, packed), R_A


def relevance(
    encoder: list[Block],
    decoder: list[Block],
    head: LMHead,
    tapes: Tapes,
    records: Sequence[tuple[Tensor, ...]],
    grads: Sequence[Tensor],
    target: Tensor,
    position: int,
) -> Relevance:
    """LRP from the one-hot ``target`` `(B,)` at the head's ``position`` down the decoder, then
    the encoder. ``records``: (A, q, k, v) of every attention and ``grads`` the target logit's
    gradient of each A, in the order encoder self, decoder self, decoder cross."""
    n, m = len(encoder), len(decoder)
    detached = [tuple(t.detach() for t in r) for r in records]
    enc, dec, cross = detached[:n], detached[n : n + m], detached[n + m :]
    A = cross[0][0]
    one_hot = F.one_hot(target, head.weight.shape[0]).to(A.dtype)
    R = lrp.head_relevance(head, tapes.decoder, one_hot, position)  # (B, T, D)
    B, _, _, S = A.shape
    R_memory = A.new_zeros(B, S, tapes.decoder[(0, "cross_kv_in")].shape[-1])
    dec_maps: list[Tensor] = [A] * m
    cross_maps: list[Tensor] = [A] * m
    for i in reversed(range(m)):
        block, g_self, g_cross = decoder[i], grads[n + i], grads[n + m + i]
        R = lrp.mlp_relevance(block, i, tapes.decoder, R)
        R, R_m, R_C = cross_relevance(block, i, tapes.decoder, R, *cross[i])
        R_memory = R_memory + R_m
        R, R_A = lrp.attention_relevance(block, i, tapes.decoder, R, *dec[i])
        dec_maps[i] = (g_self * R_A).clamp(min=0).mean(dim=1)
        cross_maps[i] = (g_cross * R_C).clamp(min=0).mean(dim=1)
    target_relevance, R = R, R_memory  # norms and dropout before the memory: identity
    enc_maps: list[Tensor] = [A] * n
    for i in reversed(range(n)):
        R, R_A = lrp.block_relevance(encoder[i], i, tapes.encoder, R, *enc[i])
        enc_maps[i] = (grads[i] * R_A).clamp(min=0).mean(dim=1)
    return Relevance(enc_maps, dec_maps, cross_maps, R, target_relevance)


__all__ = ["Relevance", "Tapes", "check_supported", "cross_relevance", "relevance", "taping"]
