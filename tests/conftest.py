"""Fixtures shared by the whole suite: the spec zoo, small specs to mutate, error assertions.

- ``zoo_path``: any test that takes it runs once per file in ``specs/`` (ids are the file stems).
- ``minimal_vit()`` / ``minimal_gpt()``: fresh, valid spec dicts, small enough to load in
  milliseconds; mutate them to build the invalid spec a test needs.
- ``spec_error(source, path, pattern)``: loads ``source``, expects a ``SpecError`` with ``path``
  among its error paths and a message at that path matching ``pattern`` (``re.search``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from archlab import SpecError, load_spec

ROOT = Path(__file__).parents[1]
ZOO = sorted(ROOT.glob("specs/*.json"))

Doc = dict[str, Any]


@pytest.fixture(autouse=True)
def _user_registry(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test reads or creates the user-level registry (``$XDG_DATA_HOME/archlab``): each test
    gets an empty data folder of its own."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "zoo_path" in metafunc.fixturenames:
        metafunc.parametrize("zoo_path", ZOO, ids=[p.stem for p in ZOO])


def make_vit() -> Doc:
    """8x8 one-channel images, 2x2 patches: 16 patches + CLS = (B, 17, 64); 4 layers of 4 heads."""
    return {
        "version": 1,
        "name": "mini-vit",
        "inputs": {"image": {"kind": "image", "channels": 1, "size": 8}},
        "nodes": {
            "patches": {"op": "patch_embed", "input": "image", "dim": 64, "patch_size": 2},
            "cls": {"op": "cls_token", "input": "patches"},
            "pos": {"op": "position", "input": "cls", "encoding": "learned"},
            "enc": {
                "op": "encoder",
                "input": "pos",
                "depth": 4,
                "block": {"attention": {"heads": 4}},
            },
            "head": {"op": "classify", "input": "enc", "classes": 10},
        },
        "outputs": "head",
    }


def make_gpt() -> Doc:
    """Tokens (vocab 100, max_len 32) -> embed 64 -> 2-layer decoder of 4 heads -> tied lm_head."""
    return {
        "version": 1,
        "name": "mini-gpt",
        "inputs": {"ids": {"kind": "tokens", "vocab_size": 100, "max_len": 32}},
        "nodes": {
            "tok": {"op": "embed", "input": "ids", "dim": 64},
            "dec": {
                "op": "decoder",
                "input": "tok",
                "depth": 2,
                "block": {"attention": {"heads": 4}},
            },
            "norm": {"op": "norm", "input": "dec"},
            "logits": {"op": "lm_head", "input": "norm", "tie": "tok"},
        },
        "outputs": "logits",
    }


def make_token_classifier(depth: int = 2, vocab: int = 32, length: int = 12) -> Doc:
    """Tokens -> embed 32 -> encoder without positions (``depth`` layers of 4 heads) -> a
    mean-pooled 3-way classifier: which key token a row holds is all it has to find."""
    return {
        "version": 1,
        "name": "which-key",
        "inputs": {"ids": {"kind": "tokens", "vocab_size": vocab, "max_len": length}},
        "nodes": {
            "tok": {"op": "embed", "input": "ids", "dim": 32},
            "enc": {
                "op": "encoder",
                "input": "tok",
                "depth": depth,
                "block": {"attention": {"heads": 4}},
            },
            "head": {"op": "classify", "input": "enc", "classes": 3, "pool": "mean"},
        },
        "outputs": "head",
    }


@pytest.fixture(scope="session")
def token_classifier() -> Callable[..., Doc]:
    return make_token_classifier


@pytest.fixture
def minimal_vit() -> Callable[[], Doc]:
    return make_vit


@pytest.fixture
def minimal_gpt() -> Callable[[], Doc]:
    return make_gpt


def messages_at(error: SpecError, path: str) -> list[str]:
    return [message for p, message in error.errors if p == path]


def describe(error: SpecError) -> str:
    return "\n".join(f"  {p!r}: {m}" for p, m in error.errors)


def check_error(error: SpecError, path: str, pattern: str) -> None:
    """``path`` is one of ``error``'s paths, and a message there matches ``pattern``."""
    found = messages_at(error, path)
    assert found, f"no error at {path!r}; errors were:\n{describe(error)}"
    assert any(re.search(pattern, m) for m in found), (
        f"no message at {path!r} matches {pattern!r}; errors were:\n{describe(error)}"
    )


@pytest.fixture
def spec_error() -> Callable[..., SpecError]:
    def expect(source: Any, path: str, pattern: str) -> SpecError:
        with pytest.raises(SpecError) as exc:
            load_spec(source)
        check_error(exc.value, path, pattern)
        return exc.value

    return expect
