"""ALiBi and T5 relative position bias against their published definitions."""

from __future__ import annotations

import math

import pytest
import torch
from nn_testing import alibi_reference

from archlab.compiler.nn import AlibiBias, RelativePositionBias, alibi_slopes


def test_alibi_slopes_for_eight_heads_are_powers_of_one_half() -> None:
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([0.5**k for k in range(1, 9)]))


def test_alibi_slopes_for_other_head_counts_interleave() -> None:
    # 6 heads: the slopes for 4 heads, then every other slope for 8 heads (Press et al.).
    expected = [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]
    torch.testing.assert_close(alibi_slopes(6), torch.tensor(expected))
    assert alibi_slopes(1).tolist() == [2**-8]


@pytest.mark.parametrize("heads", [4, 12])
def test_alibi_bias_is_minus_slope_times_distance(heads: int) -> None:
    bias = AlibiBias(heads).double()(7, 9)
    torch.testing.assert_close(bias, alibi_reference(heads, 7, 9))


def t5_bucket(offset: int, bidirectional: bool, buckets: int, max_distance: int) -> int:
    """T5's bucketing for one key-minus-query offset, with Python numbers."""
    bucket = 0
    if bidirectional:
        buckets //= 2
        bucket += buckets if offset > 0 else 0
        distance = abs(offset)
    else:
        distance = max(-offset, 0)
    exact = buckets // 2
    if distance < exact:
        return bucket + distance
    far = exact + int(
        math.log(distance / exact) / math.log(max_distance / exact) * (buckets - exact)
    )
    return bucket + min(far, buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_bias_looks_up_t5_buckets(bidirectional: bool) -> None:
    T, S, buckets, max_distance = 40, 200, 32, 128
    module = RelativePositionBias(4, buckets, max_distance, bidirectional).double()
    bias = module(T, S)
    assert bias.shape == (4, T, S)
    expected = torch.stack(
        [
            module.weight[
                [t5_bucket(j - i, bidirectional, buckets, max_distance) for j in range(S)]
            ]
            for i in range(T)
        ]
    ).permute(2, 0, 1)
    torch.testing.assert_close(bias, expected)


def test_relative_bias_validates_its_table() -> None:
    with pytest.raises(ValueError, match=r"at least 4 buckets \(bidirectional=True, got 2\)"):
        RelativePositionBias(4, buckets=2)
    with pytest.raises(ValueError, match=r"max_distance \(8\) must exceed the 8 distances"):
        RelativePositionBias(4, buckets=32, max_distance=8)
