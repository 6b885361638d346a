"""Rotary embedding: the rotation itself, and scores that depend only on the offset."""

from __future__ import annotations

import pytest
import torch
from nn_testing import rotate_complex

from archlab.compiler.nn import RotaryEmbedding


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_rotation_matches_the_complex_form(fraction: float) -> None:
    rotary = RotaryEmbedding(16, 32, fraction=fraction).double()
    q, k = (
        torch.randn(2, 3, 10, 16, dtype=torch.float64),
        torch.randn(2, 1, 7, 16, dtype=torch.float64),
    )
    rq, rk = rotary(q, k)
    rotated = round(16 * fraction)
    torch.testing.assert_close(rq, rotate_complex(q, rotated))
    torch.testing.assert_close(rk, rotate_complex(k, rotated))
    torch.testing.assert_close(rq[..., rotated:], q[..., rotated:])  # the rest passes through
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))  # rotations keep lengths


def test_scores_depend_only_on_the_offset() -> None:
    """The same query and key vectors at positions shifted together give the same score."""
    rotary = RotaryEmbedding(8, 64).double()
    qv, kv = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    length = 40
    q = qv.expand(1, 1, length, 8)
    k = kv.expand(1, 1, length, 8)
    rq, rk = rotary(q, k)
    scores = (rq @ rk.transpose(-2, -1))[0, 0]  # (T, T): query at i, key at j
    for offset in (-5, 0, 3, 11):
        diagonal = torch.diagonal(scores, offset=-offset)  # all pairs with i - j = offset
        # The cos/sin tables are stored in float32, hence the tolerance.
        torch.testing.assert_close(diagonal, diagonal[:1].expand_as(diagonal), atol=1e-6, rtol=0)
    assert not torch.allclose(torch.diagonal(scores, 0)[:1], torch.diagonal(scores, -3)[:1])


@pytest.mark.parametrize(("head_dim", "fraction"), [(10, 0.5), (8, 0.0), (8, 1.5)])
def test_rotated_channels_must_be_a_positive_even_number(head_dim: int, fraction: float) -> None:
    with pytest.raises(ValueError, match=f"rotary fraction {fraction} of head_dim {head_dim}"):
        RotaryEmbedding(head_dim, 16, fraction=fraction)


def test_too_long_sequences_are_rejected() -> None:
    rotary = RotaryEmbedding(8, 4)
    x = torch.zeros(1, 1, 5, 8)
    with pytest.raises(ValueError, match="sequence length 5 exceeds rotary max_len 4"):
        rotary(x, x)
    assert not rotary.state_dict()
