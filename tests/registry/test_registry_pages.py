"""A listing a page at a time: ``Registry.runs(offset=, limit=)`` skips in the database, and
``Registry.count(where)`` says how many runs a filter matches, on every backend."""

from __future__ import annotations

from typing import Any

import pytest

from archlab.errors import UserInputError
from archlab.registry import Registry, RegistryError

Doc = dict[str, Any]


@pytest.fixture
def seven(registry: Registry, spec: Doc) -> list[str]:
    """Seven completed runs started one second apart, ``config.i`` 0..6; newest first."""
    ids = []
    for i in range(7):
        with registry.start_run(spec, {"i": i}, started=1_000_000.0 + i) as run:
            run.log_metrics({"val_acc": i / 10})
        ids.append(run.id)
    return ids[::-1]


def test_pages_cover_the_listing_once_in_order(registry: Registry, seven: list[str]) -> None:
    pages = [[r.id for r in registry.runs(limit=3, offset=o)] for o in (0, 3, 6, 9)]
    assert pages == [seven[:3], seven[3:6], seven[6:], []]
    assert [r.id for r in registry.runs(offset=5)] == seven[5:]


def test_offset_follows_the_sort_and_the_filter(registry: Registry, seven: list[str]) -> None:
    ascending = [r.id for r in registry.runs(order_by="metrics.val_acc", limit=2, offset=1)]
    assert ascending == seven[::-1][1:3]
    found = registry.runs(where="config.i >= 3", order_by="-config.i", limit=2, offset=2)
    assert [r.config["i"] for r in found] == [4, 3]


def test_count_matches_the_filter(registry: Registry, seven: list[str]) -> None:
    assert registry.count() == 7
    assert registry.count("config.i < 2") == 2
    assert registry.count("metrics.nothing > 0") == 0
    with pytest.raises(UserInputError, match="column"):
        registry.count("config.i <")


def test_an_offset_out_of_range_is_refused(registry: Registry, seven: list[str]) -> None:
    with pytest.raises(RegistryError, match="offset"):
        registry.runs(offset=-1)
    with pytest.raises(RegistryError, match="offset"):
        registry.runs(offset=2**64)
