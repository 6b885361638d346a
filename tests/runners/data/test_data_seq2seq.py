"""The synthetic ``seq2seq:`` tasks: pairs, reproducibility per seed, options, fit checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import archlab
from archlab.runners.data import DataError, load_data

ROOT = Path(__file__).parents[3]
Doc = dict[str, Any]


def transformer_doc() -> Doc:
    doc: Doc = json.loads((ROOT / "specs/transformer-tiny.json").read_text(encoding="utf-8"))
    return doc


@pytest.mark.parametrize("task", ["copy", "reverse", "sort"])
def test_seq2seq_tasks(seq2seq_spec, task: str) -> None:
    data = load_data(f"seq2seq:{task}", seq2seq_spec, seed=3)
    src, dec, target = data.inputs["src"], data.inputs["tgt"], data.targets
    assert (data.task, len(data), data.vocab_size, data.classes) == ("seq2seq", 5000, 16, None)
    assert src.shape == dec.shape == target.shape == (5000, 10)
    assert src.dtype == dec.dtype == target.dtype == torch.int64
    assert src.min() == 3 and src.max() == 12  # ids 0..2 reserved; 10 symbols
    expected = {"copy": src, "reverse": src.flip(1), "sort": src.sort(dim=1).values}[task]
    assert torch.equal(target, expected)
    assert (dec[:, 0] == 1).all() and torch.equal(dec[:, 1:], target[:, :-1])


def test_seq2seq_is_reproducible_per_seed(seq2seq_spec) -> None:
    a = load_data("seq2seq:reverse", seq2seq_spec, seed=1)
    b = load_data("seq2seq:reverse", seq2seq_spec, seed=1)
    c = load_data("seq2seq:reverse", seq2seq_spec, seed=2)
    assert torch.equal(a.inputs["src"], b.inputs["src"]) and a.content_sha256 == b.content_sha256
    assert (
        not torch.equal(a.inputs["src"], c.inputs["src"]) and a.content_sha256 != c.content_sha256
    )
    other = load_data("seq2seq:copy", seq2seq_spec, seed=1)
    assert torch.equal(other.inputs["src"], a.inputs["src"])
    assert other.content_sha256 != a.content_sha256


def test_seq2seq_options(seq2seq_spec) -> None:
    data = load_data("seq2seq:sort?n=7&len=16&symbols=2", seq2seq_spec)
    assert data.inputs["src"].shape == (7, 16) and set(data.inputs["src"].unique().tolist()) <= {
        3,
        4,
    }
    for source, pattern in [
        ("seq2seq:shuffle", r"unknown seq2seq task 'shuffle'.*seq2seq:copy, seq2seq:reverse, seq2seq:sort"),
        ("seq2seq:copy?size=3", r"unknown option 'size'; the options are n, len, symbols"),
        ("seq2seq:copy?n=3&n=4", r"repeats 'n'"),
        ("seq2seq:copy?len=17", r"len='17' must be an integer from 1 to 16 \(the maximum\)"),
        ("seq2seq:copy?symbols=14", r"symbols='14' must be an integer from 1 to 13"),
        ("seq2seq:copy?n=-1", r"n='-1' must be an integer from 1 to 1,000,000"),
        # no size is unbounded: a huge n is refused with the maximum, not allocated
        ("seq2seq:copy?n=1000000000000", r"n='1000000000000' must be an integer from 1 to 1,000,000 \(the maximum\)"),
        ("seq2seq:copy?n=1000001", r"n='1000001' must be an integer from 1 to 1,000,000"),
        ("seq2seq:copy?len=" + "9" * 5000, r"len='9{40}' must be an integer from 1 to 16"),
    ]:  # fmt: skip
        with pytest.raises(DataError, match=pattern):
            load_data(source, seq2seq_spec)


def test_seq2seq_fit_checks(gpt) -> None:
    with pytest.raises(DataError, match=r"seq2seq:copy is encoder-decoder data .* but .* is a decoder-only language model .*; use text:PATH or npz:PATH"):  # fmt: skip
        load_data("seq2seq:copy", gpt())
    doc = transformer_doc()
    doc["inputs"]["src"]["pad_id"] = 3
    with pytest.raises(DataError, match=r"reserve id 0 for padding.* the spec's input `src` has pad_id 3"):  # fmt: skip
        load_data("seq2seq:copy", archlab.load_spec(doc))
    doc = transformer_doc()
    for name in ("src", "tgt"):
        doc["inputs"][name]["vocab_size"] = 4
    with pytest.raises(DataError, match=r"at least 2 symbols .* but the spec's vocabulary is 4"):
        load_data("seq2seq:copy", archlab.load_spec(doc))
