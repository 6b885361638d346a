"""DynamicViT's policy attention in training: the reference and the form that runs at kernel speed.

In training a DynamicViT stage keeps every token and records a hard keep decision, the *policy*
`(B, T)`; every later attention weights its keys by the gate G_ij = policy_j (j != i), G_ii = 1
(a dropped token still attends to itself), so a dropped key contributes nothing while the policy's
straight-through gradient reaches the predictors through G:

    P = softmax(s + log G) = P~ * G,    P~_ij = exp(s_ij - lse_i),    out = P v

with s the scaled scores plus any position bias, lse_i the log-sum-exp over the keys row i keeps.

`policy_attention` is the reference: every (B, H, T, T) step written out in float32, autograd
through all of it (about ten elementwise passes over the matrix each way). `fast_policy_attention`
gives the same values and gradients with the dense layers' kernel: the output and the gradients of
q, k and v come from `F.scaled_dot_product_attention` with the float mask bias + log G (-inf at a
dropped or disallowed key: exact zeros there, as in the reference), a mask that requires no grad,
so SDPA keeps its fused kernel (flash on the CPU, memory-efficient on CUDA; a mask that requires
grad sends it to the unfused math kernel). Only the gradients the kernel cannot give, those of the
policy and of a bias that learns, are added by `_PolicyGradient` from the scores recomputed once:

    dP = dout v^T,   D_i = sum_e dout_ie out_ie,   X = P~ * (dP - D),
    dS = X * G (the scores' gradient: d bias),     d policy_j = sum over heads and rows i != j of X_ij

At a dropped key P = 0 but X is not: that is the straight-through gradient to the predictors. The
policy's gradient needs only X's column sums, sum_i X_ij = v_j . (P~^T dout)_j - (P~^T D)_j, one
GEMM on P~ instead of writing dP and X out; X itself is formed only for a bias that learns. The
backward runs a few images at a time on the CPU, so its (T, T) scratch stays in the cache. Public
operators only; the same code runs on CUDA. Cost at DeiT-S's shape (B 32, H 6, T 197, E 64), one
CPU thread: about 170 ms per layer forward and backward against the dense kernel's 107, the two
GEMMs of the backward most of the difference (`bench/RESULTS.md` has the train-step figures). `policy_core` runs an `Attention`'s heads under a
policy through the fast form where it applies, else through the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from archlab.compiler.nn.attention import Attention
from archlab.compiler.nn.masks import dense_mask

#: The reference clamps exp(s - top) at e^30 (top: the kept row maximum); a dropped key's P~ does too.
CLAMP = 30.0

#: Floats of (T, T) scratch per chunk of the backward on the CPU (4 MiB: a few images at DeiT-S's
#: shape, which stay in the cache); on a GPU the allocator caches its blocks and every chunk costs
#: kernel launches, so one chunk of up to GPU_CHUNK floats (1 GiB) takes a whole batch.
CHUNK = 1 << 20
GPU_CHUNK = 1 << 28

#: False runs every policy attention through the reference (tests and benchmarks compare them).
USE_FAST = True


def policy_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    policy: Tensor,
    *,
    scale: float,
    allowed: Tensor | None = None,
    bias: Tensor | None = None,
    dropout: float = 0.0,
    training: bool = False,
) -> Tensor:
    """Softmax attention whose keys are weighted by DynamicViT's keep policy, in float32.

    A_ij = exp(s_ij - m_i) G_ij / sum_k exp(s_ik - m_i) G_ik with G_ij = policy_j for j != i and
    G_ii = 1 (a dropped token still attends to itself), m_i the row's largest score among the keys
    it keeps. A dropped key contributes exactly zero, yet the policy's straight-through gradient
    reaches the predictors through G. Equals softmax attention over the kept keys alone. The
    reference for `fast_policy_attention`.

    Shape: q `(B, H, T, E)`, k and v `(B, H, T, E)`, policy `(B, T)`, allowed `(B|1, 1, T|1, T)`
    bool, bias `(H|B, ..., T, T)` additive -> `(B, H, T, E)`.
    """
    T = q.shape[2]
    dtype = q.dtype
    scores = (q.float() @ k.float().transpose(-2, -1)) * scale  # (B, H, T, T)
    if bias is not None:
        scores = scores + bias.float()
    eye = torch.eye(T, device=q.device, dtype=torch.float32)
    gate = policy.float()[:, None, None, :] * (1 - eye) + eye  # (B, 1, T, T)
    kept = gate.detach() > 0
    if allowed is not None:
        kept = kept & allowed
        scores = scores.masked_fill(~allowed, float("-inf"))
    top = scores.masked_fill(~kept, float("-inf")).amax(dim=-1, keepdim=True).detach()
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    # a dropped key above the kept maximum would overflow exp; its weight is 0 either way
    weights = torch.exp((scores - top).clamp(max=CLAMP)) * gate  # (B, H, T, T)
    weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    weights = F.dropout(weights, dropout, training)
    return (weights @ v.float()).to(dtype)


def fast_policy_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    policy: Tensor,
    *,
    scale: float,
    allowed: Tensor | None = None,
    bias: Tensor | None = None,
    may_be_empty: bool = True,
) -> Tensor:
    """`policy_attention` (no dropout) through SDPA: the same values and gradients.

    Computes in float32 whatever the inputs' dtype, as the reference does, and casts back. A row
    that sees no key outputs zeros (as in the reference); `may_be_empty=False` (no key padding, a
    self-attention whose pattern lets every query see itself) skips that check.

    Shape: q, k, v `(B, H, T, E)`, policy `(B, T)`, allowed `(B|1, 1, T|1, T)` bool, bias
    `(H|B, ..., T, T)` additive -> `(B, H, T, E)`.
    """
    B, _, T, _ = q.shape
    if k.shape[2] != T:
        raise ValueError(f"a policy weights the keys of a self-attention, not {T} x {k.shape[2]}")
    dtype = q.dtype
    q, k, v = q.float(), k.float(), v.float()
    add = None if bias is None else bias.float()  # what the scores get: bias, -inf if disallowed
    if allowed is not None:
        add = torch.zeros(allowed.shape, device=q.device) if add is None else add
        add = add.masked_fill(~allowed, float("-inf"))
    log_gate = policy.detach().float().log()[:, None, None, :].expand(B, 1, T, T).clone()
    log_gate.diagonal(dim1=-2, dim2=-1).fill_(0.0)  # log G (B, 1, T, T): -inf where dropped
    mask = log_gate if add is None else add.detach() + log_gate  # (B, H|1, T, T)
    sees = None
    if may_be_empty:  # a row with no kept, allowed key: any finite row (no NaN), zeroed after
        sees = torch.isfinite(mask).any(dim=-1, keepdim=True)  # (B, H|1, T, 1)
        mask = mask.masked_fill(~sees, 0.0)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    if sees is not None:
        out = out.masked_fill(~sees, 0.0)
    wants = policy.requires_grad or (add is not None and add.requires_grad)
    if wants and torch.is_grad_enabled():
        out = _PolicyGradient.apply(out, q.detach(), k.detach(), v.detach(), policy, add, scale)
    return out.to(dtype)


class _PolicyGradient(torch.autograd.Function):
    """Identity on the attention's output whose backward adds the policy's and the additive
    term's gradients (SDPA gives those of q, k and v, not of a mask it is told carries none).

    Shape: out, q, k, v `(B, H, T, E)` float32, policy `(B, T)`, add `(H|B, ..., T, T)` float32
    with -inf at the disallowed keys, or None.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        out: Tensor,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        policy: Tensor,
        add: Tensor | None,
        scale: float,
    ) -> Tensor:
        ctx.save_for_backward(out, q, k, v, policy, add)  # type: ignore[arg-type]  # None is kept
        ctx.scale = scale  # type: ignore[attr-defined]
        return out.clone()

    @staticmethod
    @once_differentiable  # a second derivative would need the reference
    def backward(
        ctx: torch.autograd.function.FunctionCtx, dout: Tensor
    ) -> tuple[Tensor | None, ...]:
        out, q, k, v, policy, add = ctx.saved_tensors  # type: ignore[attr-defined]
        need_policy, need_add = ctx.needs_input_grad[4], ctx.needs_input_grad[5]  # type: ignore[attr-defined]
        B, H, T, _ = q.shape
        p = policy.detach().float()  # (B, T): G off the diagonal
        dout = dout.float()
        dpolicy = torch.zeros_like(p) if need_policy else None
        dadd = torch.zeros_like(add) if need_add and add is not None else None
        # a few batch rows at a time: the (b, H, T, T) scratch stays in the cache, and no large
        # buffer is allocated (and faulted in) per layer
        step = max(1, (CHUNK if q.device.type == "cpu" else GPU_CHUNK) // (H * T * T))
        for lo in range(0, B, step):
            c = slice(lo, min(lo + step, B))
            batched = add is not None and add.dim() == 4 and add.shape[0] == B
            add_c = add[c] if batched else add
            e, z = _kept_exp(q[c], k[c], p[c], add_c, ctx.scale)  # type: ignore[attr-defined]
            if dpolicy is not None and dadd is None:
                dpolicy[c] = _policy_gradient(e, z, dout[c], out[c], v[c])
                continue
            x = _score_gradient(e, z, dout[c], out[c], v[c])  # (b, H, T, T)
            diag = x.diagonal(dim1=-2, dim2=-1)  # (b, H, T): X_ii, whose gate is the constant 1
            if dpolicy is not None:
                dpolicy[c] = x.sum(dim=(1, 2)) - diag.sum(dim=1)
            assert dadd is not None and add is not None
            kept_diag = diag.clone()
            ds = x.mul_(p[c, None, None, :])  # dS = X * G: policy_j off the diagonal, 1 on it
            ds.diagonal(dim1=-2, dim2=-1).copy_(kept_diag)
            if batched:
                dadd[c] = ds.sum_to_size(dadd[c].shape)
            else:
                dadd += ds.sum_to_size(add.shape)
        if dpolicy is not None:
            dpolicy = dpolicy.to(policy.dtype)
        return dout, None, None, None, dpolicy, dadd, None


def _kept_exp(
    q: Tensor, k: Tensor, p: Tensor, add: Tensor | None, scale: float
) -> tuple[Tensor, Tensor]:
    """The scores recomputed once and exponentiated in place: e = exp(min(s - top, CLAMP)), top
    the row's largest kept score (as in the reference), and Z = sum_j e_ij G_ij, so that
    P~ = e / Z. Shape: q, k `(b, H, T, E)`, p `(b, T)` -> `(b, H, T, T)`, `(b, H, T, 1)`.
    """
    s = (q * scale) @ k.transpose(-2, -1)  # (b, H, T, T)
    if add is not None:
        s.add_(add)
    p = p[:, None, None, :]  # (b, 1, 1, T)
    drop = torch.zeros_like(p).masked_fill_(p == 0, float("-inf"))
    top = torch.add(s, drop)  # the dropped keys at -inf, but the diagonal's G is 1:
    top.diagonal(dim1=-2, dim2=-1).copy_(s.diagonal(dim1=-2, dim2=-1))
    top = top.amax(dim=-1, keepdim=True)  # (b, H, T, 1)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    e = s.sub_(top).clamp_max_(CLAMP).exp_()
    e_diag = e.diagonal(dim1=-2, dim2=-1).unsqueeze(-1)  # (b, H, T, 1)
    p_col = p.transpose(-2, -1)  # (b, 1, T, 1)
    z = e @ p_col + e_diag * (1 - p_col)  # sum_j e_ij G_ij
    return e, z.clamp_min_(1e-30)


def _policy_gradient(e: Tensor, z: Tensor, dout: Tensor, out: Tensor, v: Tensor) -> Tensor:
    """d policy_j = sum over heads and rows i != j of X_ij, without writing X out.

    sum_i X_ij = sum_i e_ij / Z_i (dout_i . v_j - D_i) = v_j . (e^T (dout / Z))_j - (e^T (D / Z))_j:
    one GEMM on e (transposed) instead of dP = dout v^T and three passes over (T, T).
    Shape: e `(b, H, T, T)`, z `(b, H, T, 1)`, dout, out, v `(b, H, T, E)` -> `(b, T)`.
    """
    E = v.shape[-1]
    d = (dout * out).sum(dim=-1, keepdim=True)  # D (b, H, T, 1)
    m = e.transpose(-2, -1) @ (torch.cat([dout, d], dim=-1) / z)  # (b, H, T, E + 1)
    cols = (v * m[..., :E]).sum(dim=-1) - m[..., E]  # (b, H, T): sum over every row i
    e_diag = e.diagonal(dim1=-2, dim2=-1)  # (b, H, T)
    diag = e_diag / z[..., 0] * ((dout * v).sum(dim=-1) - d[..., 0])  # X_jj
    return (cols - diag).sum(dim=1)


def _score_gradient(e: Tensor, z: Tensor, dout: Tensor, out: Tensor, v: Tensor) -> Tensor:
    """X = P~ * (dout v^T - D) in full (a bias that learns needs it), in place on dP.

    Shape: e `(b, H, T, T)`, z `(b, H, T, 1)`, dout, out, v `(b, H, T, E)` -> `(b, H, T, T)`.
    """
    d = (dout * out).sum(dim=-1, keepdim=True)  # (b, H, T, 1)
    x = dout @ v.transpose(-2, -1)  # dP (b, H, T, T)
    return x.sub_(d).mul_(e).div_(z)


def policy_core(
    attention: Attention,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_padding: Tensor | None,
    bias: Tensor | None,
    key_bias: Tensor | None,
    policy: Tensor,
) -> Tensor:
    """`attention`'s heads under a keep `policy` `(B, S)` with the layer's mask, position bias
    and `key_bias`, in place of its kernel (`Attention.core`'s shapes): `fast_policy_attention`,
    or the reference when `USE_FAST` is off or the weights drop out."""
    T, S = q.shape[2], k.shape[2]
    allowed = dense_mask(attention.mask, T, S, key_padding, q.device)
    table = attention.score_bias(T, S, bias, key_bias, q.dtype)
    kr, vr = attention.repeat_kv(k, v)
    dropout = attention.attn_dropout if attention.training else 0.0
    # with dropout the reference drops the normalised weights with its own random mask; SDPA
    # draws another and keeps it to itself, so neither the values nor the policy's gradient
    # (which needs the dropped weights) would match: dropout takes the reference
    if USE_FAST and dropout == 0.0:
        # every pattern lets a query see itself: only padding can leave a row with no key
        return fast_policy_attention(
            q,
            kr,
            vr,
            policy,
            scale=attention.scale,
            allowed=allowed,
            bias=table,
            may_be_empty=key_padding is not None,
        )
    return policy_attention(
        q,
        kr,
        vr,
        policy,
        scale=attention.scale,
        allowed=allowed,
        bias=table,
        dropout=attention.attn_dropout,
        training=attention.training,
    )


__all__ = [
    "CHUNK",
    "CLAMP",
    "GPU_CHUNK",
    "USE_FAST",
    "fast_policy_attention",
    "policy_attention",
    "policy_core",
]
