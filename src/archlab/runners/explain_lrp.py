"""Chefer et al. (CVPR 2021) relevance: LRP through the head and the blocks, batched.

Relevance starts as the one-hot target vector at the logits `(B, C)` (its total is 1 per
sample) and flows back with the paper's rules, every sum taken per sample:

- a linear layer, alpha = 1 and beta = 0 (the z+ rule, without the bias):
  R_in = x+ (S W+) + x- (S W-) with S = R / (x+ W+^T + x- W-^T);
- norms, activations, softmax and dropout pass relevance on unchanged;
- a product of two tensors (A V, and Q K^T before the scale) gives each operand the
  gradient-times-input share of the whole relevance, then halves it, so that each operand of
  A V keeps half and each of Q, K a quarter;
- a residual sum x + f(x) splits its relevance between x and f(x) in proportion to the absolute
  sums of their gradient-times-input shares, keeping the total; a copy (the block input read by
  both the residual and the branch) sums the two relevances;
- pooling the CLS token gives it the pooled vector's relevance.

The same rules carry over to the other kinds of blocks:

- additive score biases inside the softmax (ALiBi, a relative-position table) are, like a
  linear layer's bias, given no relevance: the Q K^T rule keeps q k^T as its product (the
  recorded q, k; the scale does not change the shares);
- rotary positions turn the recorded q, k (they are taken after the turn): each turn is a
  linear map per position and head, y_j = x_j cos_j -+ x_pair(j) sin_j on the rotated channels
  (pairs (c, c + R/2), the half-split layout of ``compiler.nn.rotary``). Like a norm it is not
  a learnt layer, and it takes the signed rule (LRP-0): y_j's relevance splits between x_j and
  x_pair(j) in proportion to their contributions over y_j (``rotary_relevance``), which keeps
  the total and passes an unturned position on unchanged (z+ would keep nothing of a channel
  whose contributions are both negative: at position 0, every negative channel). Channels past
  the rotated fraction pass their relevance on. Then into the qkv layer from the pre-rotary q, k;
- a gated MLP, act(gate) * value from fc1's `(value, gate)` output: the elementwise product
  gives each operand half of its relevance (the products' rule), the activation passes it on,
  and fc1 takes the z+ rule on the two halves in its output layout;
- linear attention's materialised A = phi(Q) phi(K)^T with rows normalised (causal: lower
  triangle): A V and phi(Q) phi(K)^T by the products' rule, the row normalisation and phi as
  identity (like the softmax), back to the q, k before the feature map.

The map of block b is Ā_b = E_h[(∇A_b ⊙ R_b)^+], R_b the relevance of its attention
probabilities (after the halving); R = I, R = R + Ā_b R for each block in order, row q.

Supported: classifiers that pool CLS tokens (``cls``, ``first``, ``distill``) or the mean, and
language models, over one stack of softmax or linear self-attention, with any in-attention
position and a pointwise or gated MLP. Anything else is an ``ExplainError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from archlab.compiler.nn.attention import Attention
from archlab.compiler.nn.attention_position import RotaryPosition
from archlab.compiler.nn.block import Block
from archlab.compiler.nn.heads import Classify, LMHead
from archlab.compiler.nn.linear_attention import LinearAttention
from archlab.compiler.nn.mlp import Gated, Mlp

EPS = 1e-9


def safe_divide(a: Tensor, b: Tensor) -> Tensor:
    """a / b, with 1e-9 added to b and 0 where b is exactly 0."""
    return (a / (b + EPS)).masked_fill_(b == 0, 0.0)


def linear_relevance(x: Tensor, weight: Tensor, R: Tensor, product: Tensor | None = None) -> Tensor:
    """The z+ rule (alpha 1, beta 0) of ``x @ weight^T`` without its bias.

    With x+ W+ + x- W- = (x W^T + |x| |W|^T) / 2 and the same split of the way back, the rule
    takes two products besides ``product`` (``x @ weight^T``, the layer's own forward output
    less its bias, when the caller has it) instead of four.

    Shape: x `(..., K)`, weight `(N, K)`, R `(..., N)`, product `(..., N)` -> `(..., K)`."""
    magnitude, size = x.abs(), weight.abs()
    # Z = 2 (x+ W+^T + x- W-^T) and S = R / Z: the two halves (of Z and of the result) cancel
    Z = magnitude @ size.T  # in place from here: these tensors are the size of activations
    Z.add_(x @ weight.T if product is None else product)  # >= 0
    empty = Z == 0
    S = R / Z.add_(2 * EPS)
    S.masked_fill_(empty, 0.0)
    out = (S @ weight).mul_(x)
    return out.add_((S @ size).mul_(magnitude))


def product_relevance(a: Tensor, b: Tensor, R: Tensor) -> tuple[Tensor, Tensor]:
    """Gradient-times-input shares of ``a @ b`` for each operand, each halved.

    Shape: a `(..., T, S)`, b `(..., S, E)`, R `(..., T, E)` -> `(..., T, S)`, `(..., S, E)`."""
    S = safe_divide(R, a @ b)
    return a * (S @ b.transpose(-2, -1)) / 2, b * (a.transpose(-2, -1) @ S) / 2


def rotary_relevance(x: Tensor, cos: Tensor, sin: Tensor, R: Tensor) -> Tensor:
    """The signed rule (LRP-0) of a rotary turn (``compiler.nn.rotary``) on its first
    ``cos.shape[-1]`` channels: y_j = x_j cos_j + t_j sin_j with t = (-x_second, x_first), the
    pair (c, c + R/2); y_j's relevance goes to x_j and to its pair in proportion to x_j cos_j / y_j
    and t_j sin_j / y_j, so each channel's total is kept and an unturned position (cos 1, sin 0)
    passes R on unchanged. The channels after the turned ones pass their relevance on.

    Shape: x (before the turn) and R `(..., T, E)`, cos and sin `(T, R)` -> `(..., T, E)`."""
    turned = cos.shape[-1]
    head = x[..., :turned]
    first, second = head.chunk(2, dim=-1)
    own = head * cos  # x_j's part of y_j
    pair = torch.cat([-second, first], dim=-1) * sin  # x_pair(j)'s part
    S = safe_divide(R[..., :turned], own + pair)
    to_pair_first, to_pair_second = (pair * S).chunk(2, dim=-1)  # y_j's share for its pair
    out = own.mul_(S).add_(torch.cat([to_pair_second, to_pair_first], dim=-1))
    return torch.cat([out, R[..., turned:]], dim=-1)


def sum_relevance(x: Tensor, y: Tensor, R: Tensor) -> tuple[Tensor, Tensor]:
    """Split the relevance of ``x + y`` between the addends, keeping each sample's total.

    Shape: x, y, R `(B, ...)` -> two tensors of the same shape."""
    S = safe_divide(R, x + y)
    a, b = x * S, y * S
    dims = tuple(range(1, R.dim()))
    a_sum, b_sum = a.sum(dims, keepdim=True), b.sum(dims, keepdim=True)
    total = R.sum(dims, keepdim=True)
    share = a_sum.abs() + b_sum.abs()
    a_fact = safe_divide(a_sum.abs(), share) * total
    b_fact = safe_divide(b_sum.abs(), share) * total
    return a * safe_divide(a_fact, a_sum), b * safe_divide(b_fact, b_sum)


class Tape:
    """What the explained forward left behind for the relevance: per block its input and the
    inputs of its sums, linear layers and attention operands; and the head's inputs."""

    def __init__(self) -> None:
        self.values: dict[tuple[int, str], Tensor] = {}
        self.hooks: list[Any] = []

    def keep(
        self, module: nn.Module, key: tuple[int, str], output: bool = False, arg: int = 0
    ) -> None:
        def hook(_: nn.Module, args: tuple[Any, ...], result: Any) -> None:
            value = result if output else (args[arg] if len(args) > arg else None)
            if value is not None:
                self.values[key] = value.detach()

        self.hooks.append(module.register_forward_hook(hook))

    def __getitem__(self, key: tuple[int, str]) -> Tensor:
        return self.values[key]

    def get(self, key: tuple[int, str]) -> Tensor | None:
        return self.values.get(key)


def check_supported(blocks: list[Block], head: nn.Module, seq2seq: bool = False) -> str | None:
    """Why the LRP rules here cannot explain these blocks and head, or None. ``seq2seq``: the
    stacks of an encoder-decoder (``explain_lrp_seq2seq``), whose blocks may cross-attend (that
    module checks and explains the cross-attention) and may add T5's relative position table to
    their scores (an additive bias: like a linear layer's, it gets no relevance)."""
    if isinstance(head, Classify):
        if head.pool is None:
            return "chefer explains classifiers that pool their sequence (a classify node)"
        if head.pool.mode not in ("cls", "first", "distill", "mean"):
            return f"chefer has no rule for {head.pool.mode} pooling (cls, first, distill, mean)"
    elif not isinstance(head, LMHead):
        return "chefer explains a classify or lm_head output"
    for index, block in enumerate(blocks):
        attention = block.attention
        if not isinstance(attention, Attention | LinearAttention) or attention.is_cross:
            return f"layer {index} has no self-attention"
        if block.cross_attention is not None and not seq2seq:
            return f"layer {index} cross-attends"
        if not isinstance(block.mlp, Mlp):
            return f"layer {index} has no fc1-activation-fc2 MLP"
    return None


@contextlib.contextmanager
def taping(blocks: list[Block], head: Classify | LMHead) -> Iterator[Tape]:
    tape = Tape()
    for i, block in enumerate(blocks):
        attention: Any = block.attention
        mlp: Any = block.mlp
        tape.keep(block, (i, "x"))
        tape.keep(block, (i, "z"), output=True)
        for name, layer in (("qkv", attention.qkv), ("out", attention.out), ("fc1", mlp.fc1), ("fc2", mlp.fc2)):  # fmt: skip
            tape.keep(layer, (i, f"{name}_in"))
            tape.keep(layer, (i, f"{name}_out"), output=True)
        if isinstance(getattr(attention, "position", None), RotaryPosition):  # q, k unturned
            tape.keep(attention.q_norm, (i, "q_turn_in"), output=True)
            tape.keep(attention.k_norm, (i, "k_turn_in"), output=True)
        tape.keep(block.norm1, (i, "norm1_in"))
        tape.keep(block.norm2, (i, "norm2_in"))
        tape.keep(block.ls1, (i, "attention_branch"), output=True)  # in eval: what is added
        tape.keep(block.ls2, (i, "mlp_branch"), output=True)
    if isinstance(head, LMHead):
        tape.keep(head, (-1, "tokens"))
    else:
        tape.keep(head, (-1, "tokens"))
        tape.keep(head, (-1, "mask"), arg=1)
        tape.keep(head.fc, (-1, "fc_in"))
        if head.pre_logits is not None:
            tape.keep(head.pre_logits, (-1, "pre_in"))
    try:
        yield tape
    finally:
        for hook in tape.hooks:
            hook.remove()


def head_relevance(head: Classify | LMHead, tape: Tape, one_hot: Tensor, position: int) -> Tensor:
    """From the one-hot target `(B, C)` to the stack output's tokens `(B, N, D)`: the pooled
    CLS token(s), each token's share of a mean (gradient times input), or a language model's
    explained position."""
    tokens = tape[(-1, "tokens")]
    out = tokens.new_zeros(tokens.shape)
    if isinstance(head, LMHead):
        x = tokens[:, position] if head.scale is None else tokens[:, position] * head.scale
        out[:, position] = linear_relevance(x, head.weight, one_hot)
        return out
    R = linear_relevance(tape[(-1, "fc_in")], head.fc.weight, one_hot)
    if head.pre_logits is not None:  # tanh: identity
        R = linear_relevance(tape[(-1, "pre_in")], head.pre_logits.weight, R)
    assert head.pool is not None
    if head.pool.mode == "distill":  # the pooled vector is the mean of the two CLS tokens
        out[:, 0], out[:, 1] = R / 2, R / 2
    elif head.pool.mode == "mean":  # each real token's share x_t / n of the mean
        real = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        mask = tape.get((-1, "mask"))
        if mask is not None:
            real = real & mask.bool()
        real[:, : head.pool.n_cls] = False
        share = tokens * (real / real.sum(dim=1, keepdim=True).clamp(min=1))[..., None]
        out = share * safe_divide(R, share.sum(dim=1))[:, None, :]
    else:
        out[:, 0] = R
    return out


def _taped_linear(tape: Tape, i: int, name: str, layer: nn.Linear, R: Tensor) -> Tensor:
    """``linear_relevance`` of a block's layer from its taped input and output, over only the
    token rows that carry relevance when those are few (above a classifier's last attention
    only its CLS row does, in a language model's last block only the explained position).

    Shape: R `(B, N, out)` -> `(B, N, in)`."""
    out, x = tape[(i, f"{name}_out")], tape[(i, f"{name}_in")]
    product = out if layer.bias is None else out - layer.bias.detach()
    weight = layer.weight.detach()
    rows = _live_rows(R)
    if rows is None:
        return linear_relevance(x, weight, R, product)
    found = linear_relevance(x[:, rows], weight, R[:, rows], product[:, rows])
    full = found.new_zeros(*R.shape[:-1], found.shape[-1])
    full[:, rows] = found
    return full


def _live_rows(R: Tensor) -> Tensor | None:
    """The token rows `(N,)` of R `(B, N, D)` where any sample has relevance, when they are at
    most half of them (else None: all rows are worked on)."""
    if R.dim() != 3:
        return None
    rows = R.ne(0).any(dim=-1).any(dim=0)
    return rows if int(rows.sum()) * 2 <= rows.numel() else None


def block_relevance(
    block: Block, i: int, tape: Tape, R: Tensor, A: Tensor, q: Tensor, k: Tensor, v: Tensor
) -> tuple[Tensor, Tensor]:
    """Relevance at block ``i``'s input from its output's ``R`` `(B, N, D)`, and the relevance
    of its attention probabilities `(B, H, N, N)`: the MLP branch, then the attention branch."""
    R_y = mlp_relevance(block, i, tape, R)
    return attention_relevance(block, i, tape, R_y, A, q, k, v)


def mlp_relevance(block: Block, i: int, tape: Tape, R: Tensor) -> Tensor:
    """From the relevance of block ``i``'s output `(B, N, D)` to the residual stream the MLP
    branch reads (y, with z = y + mlp(norm2(y)) pre-norm or z = norm2(y + mlp(y)) post-norm:
    the norm passes R on)."""
    mlp: Any = block.mlp
    m = tape[(i, "mlp_branch")]
    y = tape[(i, "norm2_in")] - m if not block.pre_norm else tape[(i, "z")] - m
    R_y, R_m = sum_relevance(y, m, R)
    R_h = _taped_linear(tape, i, "fc2", mlp.fc2, R_m)
    if isinstance(mlp.act, Gated):  # value * act(gate): each operand half, act: identity
        p = tape[(i, "fc2_in")]  # the product (dropout is off while explaining)
        half = safe_divide(R_h, p).mul_(p).mul_(0.5)
        R_h = torch.cat([half, half], dim=-1)  # fc1's (value, gate) layout
    return R_y + _taped_linear(tape, i, "fc1", mlp.fc1, R_h)


def attention_relevance(
    block: Block, i: int, tape: Tape, R_y: Tensor, A: Tensor, q: Tensor, k: Tensor, v: Tensor
) -> tuple[Tensor, Tensor]:
    """From the relevance of the residual stream after block ``i``'s self-attention branch
    `(B, N, D)` (y = x + attn(norm1(x)), or norm1(x + attn(x)) post-norm) to the block input,
    and the relevance of the attention probabilities `(B, H, N, N)`."""
    x = tape[(i, "x")]
    R_x, R_o = sum_relevance(x, tape[(i, "attention_branch")], R_y)
    attention: Any = block.attention
    B, N, _ = R_o.shape
    R_ctx = _taped_linear(tape, i, "out", attention.out, R_o)
    R_ctx = R_ctx.view(B, N, attention.heads, attention.head_dim).transpose(1, 2)
    R_Q, R_K, R_V, R_A = _heads_relevance(attention, i, tape, R_ctx, A, q, k, v)
    packed = torch.cat(
        [t.transpose(1, 2).reshape(B, N, -1) for t in (R_Q, R_K, R_V)], dim=-1
    )  # (B, N, (H + 2K) E), the qkv layout
    R_x = R_x + _taped_linear(tape, i, "qkv", attention.qkv, packed)
    return R_x, R_A


def _heads_relevance(
    attention: Attention | LinearAttention,
    i: int,
    tape: Tape,
    R_ctx: Tensor,
    A: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """From the relevance of the heads' outputs A V `(B, H, N, E)` to the queries, keys and
    values as the qkv layer gave them (before any turn or feature map), and to A.

    A, q, k, v as recorded: softmax attention's A `(B, H, N, N)`, q `(B, H, N, E)` and k, v
    `(B, K, N, E)` (q, k turned when rotary); linear attention's A, phi(q) and phi(k), v
    already repeated to H heads. -> R_Q `(B, H, N, E)`, R_K, R_V `(B, K, N, E)`, R_A."""
    B, H, N, E = R_ctx.shape
    K = attention.kv_heads
    kk, vv = (k, v) if isinstance(attention, LinearAttention) else attention.repeat_kv(k, v)
    R_A, R_V = product_relevance(A, vv, R_ctx)
    # softmax, or linear attention's row normalisation: identity; score biases get nothing
    R_Q, R_K = product_relevance(q, kk.transpose(-2, -1), R_A)
    R_K = R_K.transpose(-2, -1)
    if K < H:  # grouped heads: each key-value head gathers its queries' shares
        R_K = R_K.view(B, K, H // K, N, E).sum(2)
        R_V = R_V.view(B, K, H // K, N, E).sum(2)
    position = getattr(attention, "position", None)
    if isinstance(position, RotaryPosition):  # back through the turn
        cos, sin = position.rotary.cos[:N].to(q.dtype), position.rotary.sin[:N].to(q.dtype)
        R_Q = rotary_relevance(tape[(i, "q_turn_in")], cos, sin, R_Q)
        R_K = rotary_relevance(tape[(i, "k_turn_in")], cos, sin, R_K)
    return R_Q, R_K, R_V, R_A


__all__ = [
    "Tape",
    "attention_relevance",
    "block_relevance",
    "check_supported",
    "head_relevance",
    "linear_relevance",
    "mlp_relevance",
    "product_relevance",
    "rotary_relevance",
    "sum_relevance",
    "taping",
]
