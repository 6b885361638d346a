"""Mask patterns: the rule per kind, validation, and the dense SDPA mask."""

from __future__ import annotations

import pytest
import torch
from nn_testing import MASKS, rule_matrix

from archlab.compiler.nn import MaskPattern, dense_mask


@pytest.mark.parametrize("mask", MASKS.values(), ids=MASKS.keys())
@pytest.mark.parametrize(("T", "S"), [(9, 9), (5, 11), (11, 5)])
def test_allowed_follows_the_declared_rule(mask: MaskPattern, T: int, S: int) -> None:
    assert torch.equal(mask.allowed(T, S), rule_matrix(mask, T, S))


def test_causal_is_implied_by_the_kind() -> None:
    assert MaskPattern("causal").causal
    assert MaskPattern("prefix", prefix_len=2).causal
    assert MaskPattern("causal") == MaskPattern("causal", causal=True)
    assert MaskPattern("none").is_plain and MaskPattern("causal").is_plain
    assert not MaskPattern("block_local", block=2).is_plain


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"kind": "sliding_window"}, "mask sliding_window needs window"),
        ({"kind": "causal", "window": 3}, r"mask causal takes no window \(got 3\)"),
        ({"kind": "sliding_window", "window": 0}, r"window must be >= 1 \(got 0\)"),
        ({"kind": "block_local", "block": 0}, r"block must be >= 1 \(got 0\)"),
        ({"kind": "prefix", "prefix_len": -1}, r"prefix_len must be >= 0 \(got -1\)"),
        ({"kind": "none", "causal": True}, "mask none cannot be causal"),
        ({"kind": "dilated"}, "unknown mask kind 'dilated'"),
    ],
)
def test_invalid_patterns_are_rejected(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MaskPattern(**arguments)  # type: ignore[arg-type]


def test_dense_mask_combines_pattern_and_padding() -> None:
    causal = MaskPattern("causal")
    padding = torch.tensor([[False, True, True, True], [True, True, True, False]])
    assert dense_mask(MaskPattern("none"), 4, 4) is None
    only_padding = dense_mask(MaskPattern("none"), 4, 4, padding)
    assert only_padding is not None and only_padding.shape == (2, 1, 1, 4)
    only_pattern = dense_mask(causal, 4, 4)
    assert only_pattern is not None and only_pattern.shape == (1, 1, 4, 4)
    both = dense_mask(causal, 4, 4, padding)
    assert both is not None and both.shape == (2, 1, 4, 4)
    expected = causal.allowed(4, 4)[None, None] & padding[:, None, None, :]
    assert torch.equal(both, expected)
    assert not both[0, 0, 0].any()  # the first query of sample 0 sees only padding
