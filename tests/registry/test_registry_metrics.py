"""Logged metrics: steps, relogged and backfilled points, NaN values, each metric's final and best
value and best step, histories, and metric keys after a rolled-back write. Tests taking ``registry`` run on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from typing import Any

import pytest
from registry_testing import history

from archlab.registry import Registry, RegistryError

Doc = dict[str, Any]


def test_summaries_final_best_and_best_step(registry: Registry, spec: Doc) -> None:
    series = {
        "val_acc": [0.5, 0.7, 0.9, 0.8],  # higher is better
        "train/loss": [2.0, 1.0, 1.5, 1.2],  # lower is better
        "error_rate": [0.3, 0.1, 0.2, 0.25],
        "perplexity": [30.0, 20.0, 10.0, 12.0],
        "lr": [0.1, 0.3, 0.2, 0.05],  # neither: higher counts as better
    }
    with registry.start_run(spec) as run:
        for step in range(4):
            run.log_metrics({k: v[step] for k, v in series.items()}, step=step, epoch=step / 2)
            if step == 1:
                run.flush()  # summaries fold in over several batches
    got = registry.get(run.id)
    expect = {
        "val_acc": (0.8, 3, 0.9, 2),
        "train/loss": (1.2, 3, 1.0, 1),
        "error_rate": (0.25, 3, 0.1, 1),
        "perplexity": (12.0, 3, 10.0, 2),
        "lr": (0.05, 3, 0.3, 1),
    }
    for name, (final, final_step, best, best_step) in expect.items():
        s = got.summaries[name]
        assert (s.final, s.final_step, s.best, s.best_step, s.count) == (
            final,
            final_step,
            best,
            best_step,
            4,
        ), name
    assert got.metrics == {k: v[0] for k, v in expect.items()}
    assert [e for _, e, _, _ in registry.metric_history(run.id, "val_acc")] == [0, 0.5, 1.0, 1.5]


def test_steps_default_to_one_past_the_last(registry: Registry, spec: Doc) -> None:
    with registry.start_run(spec) as run:
        run.log_metrics({"loss": 3.0})
        run.log_metrics({"loss": 2.0})
        run.log_metrics({"loss": 1.0}, step=10)
        run.log_metrics({"loss": 0.5})
    assert [s for s, _ in history(registry, run.id, "loss")] == [0, 1, 10, 11]


def test_relogging_a_step_overwrites_it(registry: Registry, spec: Doc) -> None:
    with registry.start_run(spec) as run:
        run.log_metrics({"val_acc": 0.9}, step=0)
        run.log_metrics({"val_acc": 0.6}, step=0)  # same batch
        run.log_metrics({"val_acc": 0.5}, step=1)
        run.flush()
        s = registry.get(run.id).summaries["val_acc"]
        assert (s.best, s.best_step, s.count) == (0.6, 0, 2)
        run.log_metrics({"val_acc": 0.4}, step=0)  # a later batch rewrites step 0 (the best)
        run.flush()
        s = registry.get(run.id).summaries["val_acc"]
        assert (s.final, s.final_step, s.best, s.best_step, s.count) == (0.5, 1, 0.5, 1, 2)
        run.log_metrics({"val_acc": 0.3}, step=1)  # and the final step
    s = registry.get(run.id).summaries["val_acc"]
    assert (s.final, s.final_step, s.best, s.best_step, s.count) == (0.3, 1, 0.4, 0, 2)
    assert history(registry, run.id, "val_acc") == [(0, 0.4), (1, 0.3)]


def test_backfilled_steps_keep_the_summary_right(registry: Registry, spec: Doc) -> None:
    with registry.start_run(spec) as run:
        run.log_metrics({"loss": 1.0}, step=5)
        run.flush()
        run.log_metrics({"loss": 0.2}, step=3)  # an earlier step, logged late
    s = registry.get(run.id).summaries["loss"]
    assert (s.final, s.final_step, s.best, s.best_step, s.count) == (1.0, 5, 0.2, 3, 2)


def test_nan_values_are_kept_but_never_best(registry: Registry, spec: Doc) -> None:
    with registry.start_run(spec) as run:
        run.log_metrics({"loss": math.nan, "acc": 0.5, "all_nan": math.nan}, step=0)
        run.flush()
        run.log_metrics({"loss": 1.0, "acc": math.inf, "all_nan": math.nan}, step=1)
        run.log_metrics({"loss": 2.0, "acc": math.nan, "all_nan": math.nan}, step=2)
    got = registry.get(run.id)
    loss, acc, nan = got.summaries["loss"], got.summaries["acc"], got.summaries["all_nan"]
    assert (loss.final, loss.best, loss.best_step, loss.count) == (2.0, 1.0, 1, 3)
    assert math.isnan(acc.final) and acc.final_step == 2
    assert (acc.best, acc.best_step) == (math.inf, 1)
    assert math.isnan(nan.final) and math.isnan(nan.best) and nan.best_step is None
    assert nan.count == 3
    values = [v for _, v in history(registry, run.id, "loss")]
    assert math.isnan(values[0]) and values[1:] == [1.0, 2.0]
    assert math.isnan(got.metrics["acc"])


def test_metric_history_of_unknown_names(registry: Registry, spec: Doc) -> None:
    with registry.start_run(spec) as run:
        run.log_metrics({"loss": 1.0}, step=0)
    assert registry.metric_history(run.id, "nope") == []
    with pytest.raises(RegistryError, match="no run"):
        registry.metric_history("nosuchrun", "loss")


def test_metric_keys_stay_right_after_a_rolled_back_write(
    registry: Registry, spec: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed write must not leave a key id that its transaction never committed in the cache."""
    run = registry.start_run(spec)
    run.log_metrics({"fresh_metric": 1.0}, step=0)
    real = registry._fold_summaries

    def fail(*args: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(registry, "_fold_summaries", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        run.flush()
    assert "fresh_metric" not in registry._keys
    monkeypatch.setattr(registry, "_fold_summaries", real)
    run.end()  # the points went back to the buffer and are written now
    assert history(registry, run.id, "fresh_metric") == [(0, 1.0)]
