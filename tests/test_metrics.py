"""A metric name's default direction: words, not substrings, decide it."""

from __future__ import annotations

import pytest

from archlab.errors import UserInputError
from archlab.metrics import checked_direction, default_direction

LOWER = [
    "val_loss", "loss", "train_ratio_loss", "valLoss", "losses", "val_err", "top1_err",
    "error_rate", "val_ppl", "val_perplexity", "latency_ms", "latency_p90_ms", "p90_ms",
    "latency_ms_b1", "step_s", "epoch_time", "runtime", "peak_mem_mb", "memory_gb", "gflops",
    "flops", "num_params", "params", "time_per_step", "loss_per_token", "rmse",
]  # fmt: skip
HIGHER = [
    "val_acc", "acc", "val_token_acc", "accuracy", "throughput", "throughput_b64",
    "items_per_s", "samples_per_s", "tokens_per_s_b1", "tokens/s", "flops_per_s", "bleu",
    "lr", "interrupts", "ms_ssim", "s",
]  # fmt: skip


@pytest.mark.parametrize("name", LOWER)
def test_names_of_costs_are_minimised(name: str) -> None:
    assert default_direction(name) == "min"


@pytest.mark.parametrize("name", HIGHER)
def test_rates_and_scores_are_maximised(name: str) -> None:
    """A rate per unit of time counts work done, whatever it counts (``flops_per_s``); a word
    only containing ``err`` (``interrupts``) is no error."""
    assert default_direction(name) == "max"


def test_a_direction_is_min_or_max() -> None:
    assert checked_direction("min", "x") == "min"
    with pytest.raises(UserInputError, match=r"metric 'score' is 'min' .* or 'max' .* 'lowest'"):
        checked_direction("lowest", "score")
