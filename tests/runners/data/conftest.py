"""Fixtures of the data-source tests: small specs whose inputs and heads a test can change."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import archlab
from archlab.specs.models import Spec

ROOT = Path(__file__).parents[3]
Doc = dict[str, Any]


@pytest.fixture
def vit(minimal_vit: Callable[[], Doc]) -> Callable[..., Spec]:
    """The mini ViT (1 x 8 x 8 images, 10 classes), with its image input or classes changed."""

    def make(channels: int = 1, size: int = 8, classes: int = 10) -> Spec:
        doc = minimal_vit()
        doc["inputs"]["image"] = {"kind": "image", "channels": channels, "size": size}
        doc["nodes"]["head"]["classes"] = classes
        return archlab.load_spec(doc)

    return make


@pytest.fixture
def gpt(minimal_gpt: Callable[[], Doc]) -> Callable[..., Spec]:
    """The mini GPT (tokens input `ids`, lm_head `logits`), with its input changed."""

    def make(vocab_size: int = 100, max_len: int = 32, pad_id: int | None = None) -> Spec:
        doc = minimal_gpt()
        doc["inputs"]["ids"] = {"kind": "tokens", "vocab_size": vocab_size, "max_len": max_len}
        if pad_id is not None:
            doc["inputs"]["ids"]["pad_id"] = pad_id
        return archlab.load_spec(doc)

    return make


@pytest.fixture
def seq2seq_spec() -> Spec:
    return archlab.load_spec(ROOT / "specs/transformer-tiny.json")


@pytest.fixture
def token_classifier(minimal_gpt: Callable[[], Doc]) -> Spec:
    """BERT-like: tokens (vocab 100, max_len 32) -> bidirectional encoder -> classify, 3 classes."""
    doc = minimal_gpt()
    doc["nodes"]["dec"]["op"] = "encoder"
    doc["nodes"]["logits"] = {"op": "classify", "input": "norm", "classes": 3, "pool": "mean"}
    return archlab.load_spec(doc)


@pytest.fixture
def two_input_classifier(minimal_gpt: Callable[[], Doc]) -> Spec:
    """BERT-like with segment ids: `ids` and `token_types` (vocab 2) embedded and summed, a
    bidirectional encoder, classify on the first token, 3 classes."""
    doc = minimal_gpt()
    doc["inputs"]["token_types"] = {"kind": "tokens", "vocab_size": 2, "max_len": 32}
    doc["nodes"]["types"] = {"op": "embed", "input": "token_types", "dim": 64}
    doc["nodes"]["summed"] = {"op": "add", "inputs": ["tok", "types"]}
    doc["nodes"]["dec"] |= {"op": "encoder", "input": "summed"}
    doc["nodes"]["logits"] = {"op": "classify", "input": "norm", "classes": 3, "pool": "first"}
    return archlab.load_spec(doc)
