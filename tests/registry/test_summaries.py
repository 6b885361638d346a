"""``archlab.registry.summaries`` alone, with no database: a batch folded into a run's summaries,
CV aggregates over fold finals, and records built from rows."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from archlab.registry.summaries import (
    FoldFinal,
    RunParts,
    SeriesSummary,
    aggregate_finals,
    aggregate_record,
    fold_batch,
    mixup_record,
    run_record,
    stored,
    summary_record,
)

LOW = {"loss": True, "acc": False}


def test_a_first_batch_summarises_each_metric() -> None:
    batch = [("loss", 0, None, 2.0, 0.0), ("acc", 0, None, 0.5, 0.0),
             ("loss", 1, None, 1.0, 0.0), ("acc", 1, None, 0.4, 0.0)]  # fmt: skip
    done, again = fold_batch({}, LOW, batch)
    assert again == []
    assert done == {
        "loss": SeriesSummary(1, 1.0, 1.0, 1, 2),
        "acc": SeriesSummary(1, 0.4, 0.5, 0, 2),
    }


def test_a_batch_extends_what_was_committed() -> None:
    known = {"loss": SeriesSummary(3, 0.5, 0.2, 1, 4)}
    done, again = fold_batch(known, LOW, [("loss", 4, None, 0.1, 0.0)])
    assert (done, again) == ({"loss": SeriesSummary(4, 0.1, 0.1, 4, 5)}, [])
    assert known["loss"] == SeriesSummary(3, 0.5, 0.2, 1, 4)  # the input is left alone


@pytest.mark.parametrize(
    "batch",
    [
        [("loss", 3, None, 0.4, 0.0)],  # rewrites the last committed step
        [("loss", 1, None, 0.4, 0.0)],  # back-fills an earlier one
        [("loss", 5, None, 0.4, 0.0), ("loss", 5, None, 0.3, 0.0)],  # a step twice in a batch
    ],
)
def test_a_batch_out_of_order_asks_for_a_recomputation(batch: list) -> None:
    known = {"loss": SeriesSummary(3, 0.5, 0.2, 1, 4)}
    done, again = fold_batch(known, LOW, batch)
    assert (done, again) == ({}, ["loss"])


def test_nan_counts_and_can_be_last_but_never_best() -> None:
    batch = [("acc", 0, None, math.nan, 0.0), ("acc", 1, None, 0.3, 0.0),
             ("acc", 2, None, math.nan, 0.0)]  # fmt: skip
    done, _ = fold_batch({}, LOW, batch)
    assert done["acc"] == SeriesSummary(2, None, 0.3, 1, 3)
    assert stored(math.nan) is None and stored(1.5) == 1.5 and stored(None) is None


def test_aggregates_count_each_fold_once_and_skip_nan() -> None:
    finals = [
        FoldFinal(0, 10, 1, 0.8),
        FoldFinal(1, 11, 1, 0.6),
        FoldFinal(1, 15, 1, 0.1),  # a fold run twice: its first completed run counts
        FoldFinal(2, 12, 1, None),  # a NaN final value does not count
        FoldFinal(0, 10, 2, 0.5),
    ]
    by_key = {s.key: s for s in aggregate_finals(finals)}
    acc = by_key[1]
    assert (acc.n, acc.low, acc.high) == (2, 0.6, 0.8)
    assert acc.mean == pytest.approx(0.7)
    assert acc.std == pytest.approx(math.sqrt(0.02))
    assert by_key[2].std == 0.0  # one fold: stored as 0.0 ...
    assert aggregate_record("m", *by_key[2][1:]).std is None  # ... read back as undefined
    assert aggregate_finals([]) == []


def test_records_from_rows() -> None:
    summary = SimpleNamespace(last_value=None, last_step=3, best_value=0.2, best_step=1, count=4)
    s = summary_record("loss", summary)
    assert math.isnan(s.final) and (s.final_step, s.best, s.best_step, s.count) == (3, 0.2, 1, 4)
    mixup = SimpleNamespace(alpha=0.8, cutmix_alpha=1.0, cutmix_min=None, cutmix_max=0.9,
                            prob=1.0, switch_prob=0.5, mode="batch", label_smoothing=0.1,
                            off_epoch=None)  # fmt: skip
    assert mixup_record(mixup).cutmix_minmax is None  # type: ignore[union-attr]
    assert mixup_record(None) is None
    row = SimpleNamespace(id="abcd1234", kind="train", status="completed", spec_name="v",
                          spec_hash="h", fold=1, n_train=8, n_val=2, train_sha256="t",
                          val_sha256="v", started=1.0, ended=2.0, heartbeat=2.0, error=None,
                          config=None, provenance={"host": "x"})  # fmt: skip
    group = SimpleNamespace(id="grp00001", k=5)
    run = run_record(row, RunParts(group=group, summaries={"loss": s}, tags={"a": "b"}))
    assert run.cv is not None and (run.cv.group, run.cv.k, run.cv.fold) == ("grp00001", 5, 1)
    assert run.config == {} and run.provenance == {} and run.tags == {"a": "b"}
    assert math.isnan(run.metrics["loss"])
    assert run_record(row, RunParts(), full=True).provenance == {"host": "x"}
