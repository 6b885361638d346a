"""``pruning.hook``: what a token state changes in later attentions (DynamicViT's policy, ToMe's
sizes)."""

from __future__ import annotations

import torch
from pruning_testing import DIM, PATCHES, build, vit

from archlab.compiler.nn import Attention, KernelChoice, Stack
from archlab.compiler.nn.pruning import TokenState
from archlab.compiler.nn.pruning.hook import PrunedAttention


def test_stack_under_a_fixed_policy_ignores_dropped_tokens() -> None:
    dense = build(vit(depth=3), train=True)
    stack = Stack(list(dense.encoder.layers)).train()
    x = torch.randn(2, 1 + PATCHES, DIM)
    policy = (torch.rand(2, 1 + PATCHES) > 0.4).float()
    policy[:, 0] = 1
    policy[:, 1] = 0
    policy[:, 2] = 1
    state = TokenState(policy=policy)
    with torch.no_grad():
        out = stack.forward_tokens(x, state=state)[0]
        for b in range(2):
            dropped = (policy[b] == 0).nonzero().flatten()
            kept = (policy[b] > 0).nonzero().flatten()
            moved = x.clone()
            moved[b, dropped] += 5.0 * torch.randn(len(dropped), DIM)
            after = stack.forward_tokens(moved, state=state)[0]
            torch.testing.assert_close(after[b, kept], out[b, kept], rtol=0, atol=1e-6)
            torch.testing.assert_close(after[1 - b], out[1 - b], rtol=0, atol=0)
            # a dropped token still attends to the kept ones and to itself
            assert (after[b, dropped] - out[b, dropped]).abs().amax(-1).min() > 1e-3
            moved = x.clone()
            moved[b, 2] += 5.0 * torch.randn(DIM)
            after = stack.forward_tokens(moved, state=state)[0]
            assert (after[b, 0] - out[b, 0]).abs().max() > 1e-3


def test_proportional_attention_equals_attending_to_copies() -> None:
    """ToMe's log(size) bias: a key of size s weighs as s copies of it."""
    attention = Attention(8, 2, max_len=16, kernel=KernelChoice("sdpa", "test")).eval()
    x = torch.randn(1, 4, 8)
    size = torch.tensor([[1.0, 3.0, 1.0, 2.0]])
    repeats = size[0].long()
    copies = x.repeat_interleave(repeats, dim=1)  # (1, 7, 8)
    with torch.no_grad():
        out, _ = attention.attend(x, hook=PrunedAttention(None, size, None))
        expected = attention(copies)
    first = torch.cumsum(repeats, 0) - repeats  # the first copy of each token
    torch.testing.assert_close(out[0], expected[0, first], rtol=0, atol=1e-5)
