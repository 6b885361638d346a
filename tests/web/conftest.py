"""Fixtures of the ``arch ui`` tests: one registry of real training runs for the session, and a
Starlette TestClient on it speaking to 127.0.0.1 (the Host a loopback server answers). Without
the ``ui`` extra (or httpx) these tests are not collected."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from web_testing import LOOPBACK, fill, fill_pages

if TYPE_CHECKING:
    from starlette.testclient import TestClient

if any(importlib.util.find_spec(m) is None for m in ("starlette", "jinja2", "httpx")):
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def filled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The registry of ``web_testing.fill``: its URL, paths and run ids."""
    return fill(tmp_path_factory.mktemp("ui"))


@pytest.fixture
def client(filled: dict[str, Any]) -> Iterator[TestClient]:
    from starlette.testclient import TestClient

    from archlab.web.app import create_app

    with TestClient(create_app(filled["url"]), base_url=LOOPBACK) as c:
        yield c


@pytest.fixture(scope="session")
def paired(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The registry of ``web_testing.fill_pages``: CV groups to pair, pictures; URL and ids."""
    return fill_pages(tmp_path_factory.mktemp("ui-pages"))


@pytest.fixture
def pages_client(paired: dict[str, Any]) -> Iterator[TestClient]:
    from starlette.testclient import TestClient

    from archlab.web.app import create_app

    with TestClient(create_app(paired["url"]), base_url=LOOPBACK) as c:
        yield c
