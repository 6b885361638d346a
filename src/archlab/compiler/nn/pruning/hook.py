"""Attention over a pruned sequence: what the token state changes in every later attention, and
what a stage reads from its layer's attention.

`Block` passes `attention_hook(state, need)` to its attention (`Attention.attend`) without
knowing the methods behind it: DynamicViT's training policy weights the keys
(`policy.policy_core`), ToMe's sizes add log(size) to the scores (`tome.proportional_bias`), and
`READERS[need]` takes EViT's CLS attention or ToMe's keys.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from archlab.compiler.nn.attention import Attention, AttentionHook
from archlab.compiler.nn.pruning.evit import cls_attention
from archlab.compiler.nn.pruning.policy import policy_core
from archlab.compiler.nn.pruning.stage import NeedKind
from archlab.compiler.nn.pruning.state import TokenState
from archlab.compiler.nn.pruning.tome import mean_keys, proportional_bias

#: (attention, q, k, key_padding, bias, key_bias) -> what a stage reads from the attention
ReadFn = Callable[[Attention, Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None], Tensor]
READERS: dict[NeedKind, ReadFn] = {"cls": cls_attention, "keys": mean_keys}


class PrunedAttention(AttentionHook):
    """One attention call on a pruned sequence. `policy` `(B, S)`: DynamicViT's keep policy
    (the policy-weighted softmax runs instead of the kernel); `size` `(B, S)`: ToMe's sizes
    (proportional attention); `read`: what to take from the attention, or None."""

    def __init__(self, policy: Tensor | None, size: Tensor | None, read: ReadFn | None) -> None:
        self.policy = policy
        self.key_bias = None if size is None else proportional_bias(size)  # (B, 1, 1, S)
        self.reader = read

    def attend(
        self,
        attention: Attention,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        key_padding: Tensor | None,
        bias: Tensor | None,
    ) -> Tensor:
        if self.policy is not None:
            return policy_core(attention, q, k, v, key_padding, bias, self.key_bias, self.policy)
        return attention.core(q, k, v, key_padding, bias, self.key_bias)

    def read(
        self,
        attention: Attention,
        q: Tensor,
        k: Tensor,
        key_padding: Tensor | None,
        bias: Tensor | None,
    ) -> Tensor | None:
        if self.reader is None:
            return None
        return self.reader(attention, q, k, key_padding, bias, self.key_bias)


def attention_hook(state: TokenState | None, need: NeedKind | None) -> PrunedAttention | None:
    """The hook of an attention on a sequence in `state` whose layer must give `need`; None
    where the attention runs as in a dense model."""
    policy = state.policy if state is not None else None
    size = state.size if state is not None else None
    if policy is None and size is None and need is None:
        return None
    return PrunedAttention(policy, size, READERS[need] if need is not None else None)


__all__ = ["READERS", "PrunedAttention", "ReadFn", "attention_hook"]
