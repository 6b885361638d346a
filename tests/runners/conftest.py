"""Fixtures for the training tests: a registry of their own in a temporary directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from archlab.registry import Registry


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}", artifacts=tmp_path / "artifacts")
    yield reg
    reg.close()


@pytest.fixture
def random_images(tmp_path: Path) -> Callable[[int, int], str]:
    """Make an ``npz:`` data source of ``n`` random 8 x 8 images over ``classes`` classes
    (seeded): a fold of the tiny zoo ViT trains on it in well under a second."""

    def make(n: int, classes: int) -> str:
        rng = np.random.default_rng(0)
        x = rng.random((n, 1, 8, 8), dtype=np.float32)
        np.savez(tmp_path / "small.npz", x=x, y=np.arange(n) % classes)
        return f"npz:{tmp_path / 'small.npz'}"

    return make
