"""Fixtures for the training tests: a registry of their own in a temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from archlab.registry import Registry


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", artifacts=tmp_path / "artifacts")
    yield reg
    reg.close()
