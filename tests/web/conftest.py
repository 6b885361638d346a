"""Fixtures of the ``arch ui`` tests: one registry of real training runs for the module, and a
Starlette TestClient on it speaking to 127.0.0.1 (the Host a loopback server answers)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient
from web_testing import LOOPBACK, fill

from archlab.web.app import create_app


@pytest.fixture(scope="session")
def filled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The registry of ``web_testing.fill``: its URL, paths and run ids."""
    return fill(tmp_path_factory.mktemp("ui"))


@pytest.fixture
def client(filled: dict[str, Any]) -> Iterator[TestClient]:
    with TestClient(create_app(filled["url"]), base_url=LOOPBACK) as c:
        yield c
