"""``archlab.registry.ranking`` from Python: the best run or CV group by a metric, in the
direction the registry keeps or one given against it, and the rows ``arch runs best`` prints.
Tests taking ``registry`` run on SQLite and PostgreSQL."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import pytest

from archlab.errors import UserInputError
from archlab.registry import Registry, RegistryError, ranking

Doc = dict[str, Any]


def _run(registry: Registry, spec: Doc, values: list[float], **kwargs: Any) -> str:
    with registry.start_run(spec, **kwargs) as run:
        for step, value in enumerate(values):
            run.log_metrics({"val_acc": value}, step=step)
    return run.id


def test_the_best_run_in_the_metric_direction(registry: Registry, spec: Doc) -> None:
    """A run ranks by its best value; its row says which value and at which step."""
    low = _run(registry, spec, [0.2, 0.6, 0.5])
    high = _run(registry, spec, [0.3, 0.9, 0.1])
    answer = ranking.best(registry, "val_acc")
    assert [e.id for e in answer.ranked] == [high]
    assert not answer.lowest and answer.direction == "highest"
    assert answer.extremes == {} and answer.known == []
    (row,) = answer.rows()
    assert not row.group and row.id == high and row.status == "completed"
    assert (row.value, row.which, row.final) == (0.9, "best, step 1", 0.1)
    assert row.cv == "-" and row.mixup == "-"
    per_spec = ranking.best(registry, "val_acc", group_by="spec")
    assert [e.id for e in per_spec.ranked] == [high]
    assert low not in [e.id for e in per_spec.ranked]


def test_a_direction_against_the_metric_ranks_by_the_other_extreme(
    registry: Registry, spec: Doc
) -> None:
    """``direction="min"`` on an accuracy: each run by its lowest point, read from its series,
    not by its summary's best (highest) value."""
    a = _run(registry, spec, [0.5, 0.9])
    b = _run(registry, spec, [0.3, 0.95])
    answer = ranking.best(registry, "val_acc", by="run", direction="min")
    assert answer.lowest and answer.direction == "lowest"
    assert [e.id for e in answer.ranked] == [b]
    assert answer.extremes == {b: (0.3, 0)}
    (row,) = answer.rows()
    assert (row.value, row.which, row.final) == (0.3, "lowest, step 0", 0.95)
    assert a not in answer.extremes
    # the metric's own direction given again changes nothing
    again = ranking.best(registry, "val_acc", by="run", direction="max")
    assert again.extremes == {} and again.rows()[0].which == "best, step 1"


def test_a_cv_group_ranks_by_its_folds_mean(registry: Registry, spec: Doc) -> None:
    group = registry.start_cv(spec, k=3, seed=0)
    finals = [0.7, 0.8]
    for fold, acc in enumerate(finals):
        _run(registry, spec, [acc], cv_group=group, fold=fold)
    answer = ranking.best(registry, "val_acc", by="group")
    (row,) = answer.rows()
    assert row.group and row.id == group.id
    assert row.status == "2 of 3 folds" and row.cv == "CV group, k=3"
    assert row.value == pytest.approx(statistics.fmean(finals))
    assert row.std == pytest.approx(statistics.stdev(finals)) and row.n == 2
    assert row.which == "mean of final values over 2 folds"
    first = registry.get(registry.group(group.id).runs[0])
    assert answer.spec_names == {group.id: first.spec_name} == {group.id: row.spec_name}


def test_an_unknown_metric_is_refused_naming_the_recorded_ones(
    registry: Registry, spec: Doc
) -> None:
    with pytest.raises(UserInputError, match="the metrics recorded: none yet"):
        ranking.check_recorded("val_acc", [], "registry x")
    answer = ranking.best(registry, "val_acc")  # an empty registry: nothing, no error
    assert answer.ranked == [] and answer.known == [] and answer.rows() == []
    _run(registry, spec, [0.5])
    with pytest.raises(UserInputError, match="did you mean 'val_acc'") as info:
        ranking.best(registry, "val_ac")
    assert "registry " in str(info.value) and "the metrics recorded: val_acc" in str(info.value)
    # a known metric no matching run has: nothing ranked, the matching runs' metrics named
    with registry.start_run(spec, {"lr": 5}) as other:
        other.log_metrics({"val_loss": 0.1}, step=0)
    none = ranking.best(registry, "val_acc", where="config.lr == 5")
    assert none.ranked == [] and none.known == ["val_loss"]


def test_best_by_spec_with_odd_metric_names(
    registry: Registry, minimal_vit: Callable[[], Doc], minimal_gpt: Callable[[], Doc]
) -> None:
    ids = {}
    for name, doc, values in (
        ("vit", minimal_vit(), (0.5, 0.7)),
        ("gpt", minimal_gpt(), (0.6, 0.4)),
    ):
        for value in values:
            with registry.start_run(doc) as run:
                run.log_metrics({"acc@1": value, "val loss": 1 - value}, step=0)
            ids[(name, value)] = run.id
    best = registry.best("acc@1", group_by="spec")
    assert [r.id for r in best] == [ids[("vit", 0.7)], ids[("gpt", 0.6)]]
    assert [r.id for r in registry.best("val loss")] == [ids[("vit", 0.7)]]
    assert registry.best("missing") == []


# ------------------------------------------------------------------------- metric directions


def _runs_with(registry: Registry, spec: Doc, metric: str, *series: list[float]) -> list[str]:
    """One completed run per series of ``metric`` values (steps 0, 1, ...), in order."""
    ids = []
    for values in series:
        with registry.start_run(spec) as run:
            for step, value in enumerate(values):
                run.log_metrics({metric: value}, step=step)
        ids.append(run.id)
    return ids


def test_best_of_a_latency_is_the_fastest_run(registry: Registry, spec: Doc) -> None:
    """``latency_ms`` has no word of the old guess (loss, err, perplexity) but is lower-better."""
    fast, slow = _runs_with(registry, spec, "latency_ms", [9.0, 4.0, 5.0], [12.0, 8.0])
    assert registry.metric_direction("latency_ms") == "min"
    assert registry.get(fast).summaries["latency_ms"].best == 4.0
    assert [r.id for r in registry.best("latency_ms")] == [fast]
    assert [r.id for r in registry.rank("latency_ms", limit=None)] == [fast, slow]


def test_a_declared_direction_is_kept_and_ranks_the_runs(registry: Registry, spec: Doc) -> None:
    """``score`` would be maximised by its name; declared ``min``, every best value, ``best`` and
    ``rank`` take lower as better, in this registry object and any other opened later."""
    assert registry.declare_metrics({"score": "min"}) == {"score": "min"}
    low, high = _runs_with(registry, spec, "score", [2.0, 1.0], [3.0, 1.5])
    assert (
        registry.get(low).summaries["score"].best_step,
        registry.get(high).summaries["score"].best,
    ) == (1, 1.5)
    assert [r.id for r in registry.best("score")] == [low]
    assert [r.id for r in registry.best("score", group_by="spec")] == [low]
    assert [(e.id, e.value) for e in registry.rank("score", limit=None)] == [
        (low, 1.0),
        (high, 1.5),
    ]
    with Registry(registry.url) as again:
        assert again.metric_direction("score") == "min"
        assert [r.id for r in again.best("score")] == [low]
        # declaring it again the same way is fine; the other way is refused, recording nothing
        assert again.declare_metrics({"score": "min", "new_metric": "min"})["new_metric"] == "min"
        with pytest.raises(RegistryError, match=r"'score' is recorded .* as 'min'.*--max"):
            again.declare_metrics({"score": "max"})
        with pytest.raises(UserInputError, match=r"'min' .* or 'max' .* not 'lowest'"):
            again.declare_metrics({"other": "lowest"})
        assert again.metric_direction("score") == "min"


def test_a_direction_given_to_best_and_rank_overrides_the_metrics(
    registry: Registry, spec: Doc
) -> None:
    """Ranked the other way, a run counts with its highest (or lowest) point, not with its best
    value in the metric's own direction."""
    low, high = _runs_with(registry, spec, "val_loss", [2.0, 1.0], [3.0, 1.5])
    assert [r.id for r in registry.best("val_loss")] == [low]
    assert [r.id for r in registry.best("val_loss", direction="max")] == [high]
    assert [r.id for r in registry.best("val_loss", group_by="spec", direction="max")] == [high]
    ranked = registry.rank("val_loss", limit=None, direction="max")
    assert [(e.id, e.value) for e in ranked] == [(high, 3.0), (low, 2.0)]
    with pytest.raises(UserInputError, match=r"'min' .* or 'max'"):
        registry.best("val_loss", direction="down")
