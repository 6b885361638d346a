"""Per-run summaries (final, best, best step, count) equal what the stored series says, whatever
order steps are logged, rewritten or back-filled in, and wherever the batches are cut."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archlab.metrics import default_direction
from archlab.registry import Registry

VIT = Path(__file__).resolve().parents[2] / "specs" / "vit-tiny-digits.json"

op = st.tuples(
    st.sampled_from(["val_loss", "val_acc"]),  # one minimised, one maximised
    st.one_of(st.none(), st.integers(0, 6)),  # None: one past the metric's last step
    st.sampled_from([0.1, 0.5, 0.9, math.nan]),  # few values: ties and NaN are common
    st.booleans(),  # flush after this point
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    folder = tmp_path_factory.mktemp("summaries")
    with Registry(f"sqlite:///{folder / 'r.db'}", artifacts=folder / "a") as reg:
        yield reg


def expected(points: list[tuple[int, float]], name: str) -> dict[str, Any]:
    series: dict[int, float] = {}
    for step, value in points:
        series[step] = value  # the last logged value of a step wins
    last = max(series)
    numbers = [(v, s) for s, v in series.items() if not math.isnan(v)]
    if default_direction(name) == "min":
        best = min(numbers, key=lambda p: (p[0], p[1]), default=None)
    else:
        best = min(numbers, key=lambda p: (-p[0], p[1]), default=None)
    return {
        "final": series[last],
        "final_step": last,
        "best": best[0] if best else math.nan,
        "best_step": best[1] if best else None,
        "count": len(series),
    }


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(op, min_size=1, max_size=25))
def test_summaries_match_the_series(
    registry: Registry, ops: list[tuple[str, int | None, float, bool]]
) -> None:
    logged: dict[str, list[tuple[int, float]]] = {}
    last: dict[str, int] = {}
    with registry.start_run(str(VIT), heartbeat=60) as run:
        for name, step, value, flush in ops:
            run.log_metrics({name: value}, step=step)
            s = last.get(name, -1) + 1 if step is None else step
            last[name] = max(last.get(name, -1), s)
            logged.setdefault(name, []).append((s, value))
            if flush:
                run.flush()
    got = registry.get(run.id).summaries
    assert set(got) == set(logged)
    for name, points in logged.items():
        summary = got[name]
        actual = {
            "final": summary.final,
            "final_step": summary.final_step,
            "best": summary.best,
            "best_step": summary.best_step,
            "count": summary.count,
        }
        want = expected(points, name)
        assert actual.keys() == want.keys()
        for key in want:
            a, b = actual[key], want[key]
            assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), (key, ops)
