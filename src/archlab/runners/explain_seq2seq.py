"""Explaining an encoder-decoder's next token (Chefer et al., ICCV 2021, the generic rules).

Relevance lives in three matrices, per sample: R_ss over the source tokens (the encoder's
self-attention), R_tt over the target tokens (the decoder's) and R_ts from target to source
tokens (what the cross-attention carries). With Ā = E_h[(∇A ⊙ A)^+] for ``generic``,
Ā = E_h A for ``rollout`` (the same rules without gradients) and Ā = E_h[(∇A ⊙ R_A)^+] for
``chefer``, R_A the LRP relevance of A (``explain_lrp_seq2seq``):

- R_ss = I; each encoder self-attention: R_ss = R_ss + Ā R_ss;
- R_tt = I, R_ts = 0; each decoder layer in order, its self-attention:
  R_tt = R_tt + Ā R_tt and R_ts = R_ts + Ā R_ts, then its cross-attention:
  R_ts = R_ts + R̄_ttᵀ Ā R̄_ss, where R̄ = (R − I) / (its row sums) + I (a row of R − I that
  sums to 0 stays 0);
- the explained position p's row: ``scores`` = R_ts[p] over the source tokens,
  ``decoder_scores`` = R_tt[p] over the target tokens.

``attention`` reads the last layer's head-averaged cross-attention (and self-attention) at p.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from archlab.compiler.model import CompiledModel
from archlab.compiler.nn.attention import Attention
from archlab.compiler.nn.linear_attention import LinearAttention


def attentions_of(
    model: CompiledModel, stack_id: str, cross: bool, error: Any
) -> list[Attention | LinearAttention]:
    """The self- (or cross-) attentions of a stack's layers, all softmax attentions."""
    found: list[Attention | LinearAttention] = []
    for index, layer in enumerate(getattr(model, stack_id).layers):
        attention = layer.cross_attention if cross else layer.attention
        if not isinstance(attention, Attention | LinearAttention):
            raise error(f"layer {index} of `{stack_id}` has no attention to read")
        found.append(attention)
    return found


def normalised(R: Tensor) -> Tensor:
    """R̄ = (R − I) / row sums + I, per sample; a row of R − I summing to 0 stays 0."""
    eye = torch.eye(R.shape[-1], device=R.device, dtype=R.dtype)
    excess = R - eye
    sums = excess.sum(dim=-1, keepdim=True)
    return torch.where(sums != 0, excess / sums.where(sums != 0, 1.0), 0.0) + eye


def maps(method: str, probabilities: list[Tensor], grads: Sequence[Tensor] | None) -> list[Tensor]:
    """Ā of each recorded map `(B, H, T, S)` -> `(B, T, S)`: E_h[(∇A ⊙ A)^+] for ``generic``
    (``grads`` in the same order), E_h A for ``rollout``."""
    if method == "generic":
        assert grads is not None
        return [(g * A).clamp(min=0).mean(dim=1) for A, g in zip(probabilities, grads, strict=True)]
    return [A.mean(dim=1) for A in probabilities]


def relevance(
    encoder: list[Tensor], decoder: list[Tensor], cross: list[Tensor]
) -> tuple[Tensor, Tensor]:
    """(R_ts `(B, T, S)`, R_tt `(B, T, T)`) by the rules above from each layer's map Ā, however
    it was made (``maps``, or ``explain_lrp_seq2seq`` for ``chefer``): the encoder's
    self-attention `(B, S, S)`, the decoder's `(B, T, T)` and its cross-attention `(B, T, S)`."""
    B, T, S = cross[0].shape
    R_ss = torch.eye(S, dtype=cross[0].dtype, device=cross[0].device).expand(B, S, S)
    for A in encoder:
        R_ss = R_ss + A @ R_ss
    R_tt = torch.eye(T, dtype=cross[0].dtype, device=cross[0].device).expand(B, T, T)
    R_ts = cross[0].new_zeros(B, T, S)
    for A, C in zip(decoder, cross, strict=True):
        R_tt, R_ts = R_tt + A @ R_tt, R_ts + A @ R_ts
        R_ts = R_ts + normalised(R_tt).transpose(-2, -1) @ C @ normalised(R_ss)
    return R_ts, R_tt


__all__ = ["attentions_of", "maps", "normalised", "relevance"]
