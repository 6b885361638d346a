"""A run's mixup setting (``MixupSetting``): round trips, timm's defaults, inactive settings and
the values refused. Tests taking ``registry`` run on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
from registry_testing import count
from sqlalchemy import Engine

from archlab.registry import MixupSetting, Registry, RegistryError
from archlab.registry.models import MixupRow, RunRow

Doc = dict[str, Any]


MIXUP = {
    "alpha": 0.8,
    "cutmix_alpha": 1.0,
    "cutmix_minmax": [0.3, 0.9],
    "prob": 0.9,
    "switch_prob": 0.4,
    "mode": "pair",
    "label_smoothing": 0.1,
    "off_epoch": 90,
}


def test_mixup_round_trips(registry: Registry, spec: Doc) -> None:
    want = MixupSetting(
        alpha=0.8,
        cutmix_alpha=1.0,
        cutmix_minmax=(0.3, 0.9),
        prob=0.9,
        switch_prob=0.4,
        mode="pair",
        label_smoothing=0.1,
        off_epoch=90,
    )
    forms: dict[str, Any] = {
        "dict": dict(MIXUP),
        "object": SimpleNamespace(**MIXUP, unrelated="ignored"),
        "record": MixupSetting.from_any(MIXUP),
    }
    for form, given in forms.items():
        with registry.start_run(spec, mixup=given) as run:
            pass
        got = registry.get(run.id).mixup
        assert got == want, form
        assert got.to_dict() == MIXUP
        assert registry.get(run.id).to_dict()["mixup"] == MIXUP


def test_partial_mixup_takes_timm_defaults(registry: Registry, spec: Doc) -> None:
    with registry.start_run(spec, mixup={"cutmix_alpha": 1.0}) as run:
        pass
    assert registry.get(run.id).mixup == MixupSetting(cutmix_alpha=1.0)


def test_inactive_mixup_records_none(registry: Registry, spec: Doc, raw_engine: Engine) -> None:
    inactive: list[Any] = [
        {},
        {"alpha": 0.0, "cutmix_alpha": 0.0},
        {"alpha": 0.4, "prob": 0.0},  # never applied
        SimpleNamespace(alpha=0.0, cutmix_alpha=0.0, mode="elem"),
    ]
    for setting in inactive:
        with registry.start_run(spec, mixup=setting) as run:
            pass
        assert registry.get(run.id).mixup is None, setting
        assert registry.get(run.id).to_dict()["mixup"] is None
    assert count(raw_engine, MixupRow) == 0


INVALID_MIXUP = [
    ({"alpha": -0.1}, "alpha must be a finite number >= 0"),
    ({"alpha": math.inf}, "alpha must be a finite number >= 0"),
    ({"alpha": "0.2"}, "alpha must be a finite number"),
    ({"prob": 1.5}, r"prob must be in \[0, 1\]"),
    ({"switch_prob": -1}, r"switch_prob must be in \[0, 1\]"),
    ({"mode": "batchwise"}, "mode must be one of batch, pair, elem"),
    ({"cutmix_minmax": [0.9, 0.3]}, "cutmix_minmax must be"),
    ({"cutmix_minmax": [0.5]}, "cutmix_minmax must be"),
    ({"cutmix_minmax": 0.5}, "cutmix_minmax must be"),
    ({"off_epoch": -1}, "off_epoch must be an integer >= 0"),
    ({"off_epoch": "10"}, "off_epoch must be an integer >= 0"),
    ({"alpha": 0.2, "beta": 1}, r"unknown mixup field\(s\) \['beta'\]"),
    (0.2, "not a mixup setting"),
]


@pytest.mark.parametrize(("bad", "message"), INVALID_MIXUP)
def test_invalid_mixup_values_are_refused(bad: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MixupSetting.from_any(bad)


def test_a_run_with_invalid_mixup_is_not_started(
    registry: Registry, spec: Doc, raw_engine: Engine
) -> None:
    for bad, message in INVALID_MIXUP:
        with pytest.raises(RegistryError, match=message):
            registry.start_run(spec, mixup=bad)
    assert count(raw_engine, RunRow) == 0
