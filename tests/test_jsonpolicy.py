"""archlab's one JSON policy: NaN and the infinities as strings, null for "no value"."""

from __future__ import annotations

import json
import math
from pathlib import Path

from archlab.jsonpolicy import jsonable


def test_non_finite_floats_become_strings_and_the_rest_plain_json() -> None:
    value = {
        "nan": math.nan,
        "inf": math.inf,
        "ninf": -math.inf,
        "none": None,
        "nested": ({1: [math.nan, 0.5]},),
        "path": Path("/data/x"),
    }
    assert jsonable(value) == {
        "nan": "nan",
        "inf": "inf",
        "ninf": "-inf",
        "none": None,
        "nested": [{"1": ["nan", 0.5]}],
        "path": "/data/x",
    }
    json.dumps(jsonable(value), allow_nan=False)  # strict JSON


def test_what_a_registry_already_stores_reads_the_same() -> None:
    stored = {"clip": "inf", "warmup": "nan", "lr": 0.001, "note": None}
    assert jsonable(stored) == stored
    assert jsonable(jsonable({"clip": math.inf})) == {"clip": "inf"}
