"""``task_of``: the training task follows from a spec's output, or is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

import archlab
from archlab.errors import UserInputError
from archlab.runners.data import DataError, task_of

ROOT = Path(__file__).parents[3]


def test_task_follows_from_the_output(vit, gpt, seq2seq_spec, token_classifier) -> None:
    assert task_of(vit()) == "classify"
    assert task_of(token_classifier) == "classify"
    assert task_of(gpt()) == "lm"
    assert task_of(seq2seq_spec) == "seq2seq"
    assert task_of(archlab.load_spec(ROOT / "specs/t5-small.json")) == "seq2seq"


def test_task_of_refuses_specs_without_a_trainable_head(minimal_vit, minimal_gpt) -> None:
    doc = minimal_vit()
    doc["nodes"]["pooled"] = {"op": "pool", "input": "enc", "mode": "mean"}
    doc["outputs"] = ["head", "pooled"]
    with pytest.raises(DataError, match=r"has 2 outputs \(`head`, `pooled`\); arch train supports"):
        task_of(archlab.load_spec(doc))
    doc = minimal_vit()
    del doc["nodes"]["head"]
    doc["outputs"] = "enc"
    with pytest.raises(DataError, match=r"output `enc` is a `encoder` node; arch train supports"):
        task_of(archlab.load_spec(doc))
    doc = minimal_gpt()
    doc["nodes"]["dec"]["op"] = "encoder"
    with pytest.raises(DataError, match=r"lm_head `logits` sits on a bidirectional encoder"):
        task_of(archlab.load_spec(doc))
    assert issubclass(DataError, UserInputError)
