"""The ``text:PATH`` source: byte- and char-level windows, content hashes and fit checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from archlab.runners.data import DataError, load_data
from archlab.runners.data.text import TextVocab


def test_text_byte_level_windows(gpt, tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    raw = "héllo wörld, the quick brown fox\n".encode()
    path.write_bytes(raw)
    data = load_data(f"text:{path}", gpt(vocab_size=256, max_len=8))
    T = 8
    windows = (len(raw) - 1) // T
    x, y = data.inputs["ids"], data.targets
    assert (data.task, data.vocab_size) == ("lm", 256)
    assert x.shape == y.shape == (windows, T) and x.dtype == y.dtype == torch.int64
    for i in range(windows):
        assert x[i].tolist() == list(raw[i * T : (i + 1) * T])
        assert y[i].tolist() == list(raw[i * T + 1 : (i + 1) * T + 1])
    assert data.content_sha256 == sha256(path)
    assert "byte-level" in data.description
    path.write_bytes(raw.replace(b"fox", b"cat"))
    changed = load_data(f"text:{path}", gpt(vocab_size=256, max_len=8))
    assert changed.content_sha256 == sha256(path) != data.content_sha256
    assert changed.inputs["ids"].shape == x.shape


def test_text_char_level_keeps_the_pad_id_free(gpt, tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("abcab cab", encoding="utf-8")
    data = load_data(f"text:{path}", gpt(vocab_size=5, max_len=4, pad_id=0))
    ids = {" ": 1, "a": 2, "b": 3, "c": 4}  # sorted characters, numbered around pad id 0
    assert data.inputs["ids"].tolist() == [[ids[c] for c in "abca"], [ids[c] for c in "b ca"]]
    assert data.targets.tolist() == [[ids[c] for c in "bcab"], [ids[c] for c in " cab"]]
    assert "char-level, 4 characters" in data.description
    assert data.text_vocab == {"level": "char", "code_points": [ord(c) for c in " abc"]}


def test_the_recorded_vocabulary_encodes_and_decodes_as_the_data_did(gpt, tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    text = "to be, or not to be\n\u00e9t\u00e9 \u2014 \U0001f600!"
    path.write_text(text, encoding="utf-8")
    for spec, level in ((gpt(vocab_size=40, max_len=4, pad_id=2), "char"), (gpt(256, 4), "byte")):
        data = load_data(f"text:{path}", spec)
        assert data.text_vocab is not None and data.text_vocab["level"] == level
        vocab = TextVocab.from_record(data.text_vocab, spec.inputs["ids"].pad_id)  # type: ignore[union-attr]
        first = data.inputs["ids"][0].tolist()
        assert vocab.encode(text)[: len(first)] == first
        assert vocab.decode(vocab.encode(text)) == text
        decoder = vocab.decoder()  # one id at a time: a character appears once it is complete
        pieces = [decoder.feed([i]) for i in vocab.encode(text)]
        assert "".join(pieces) + decoder.finish() == text
    byte = TextVocab("byte")
    assert byte.decode([0xE2, 0x82]) == "\ufffd"  # an unfinished character
    char = TextVocab("char", ("a", "b"), pad_id=0)
    assert char.encode("ba") == [2, 1] and char.decode([0, 1, 7]) == "\ufffda\ufffd"
    with pytest.raises(DataError, match=r"the character 'z' \(U\+007A, at position 1\) is not in"):
        char.encode("az")


def test_text_fit_checks(gpt, vit, tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("short", encoding="utf-8")
    with pytest.raises(DataError, match=r"has 5 tokens \(byte-level\) but one window of the spec's input `ids` \(max_len 8\) needs 9"):  # fmt: skip
        load_data(f"text:{path}", gpt(vocab_size=256, max_len=8))
    path.write_text("abcdefghijklmnopqrstuvwxyz", encoding="utf-8")
    with pytest.raises(DataError, match=r"has 26 distinct characters, needing 26 ids, but the spec's input `ids` has vocab_size 20"):  # fmt: skip
        load_data(f"text:{path}", gpt(vocab_size=20, max_len=4))
    path.write_bytes(b"abc\xff\xfe" * 4)
    with pytest.raises(DataError, match=r"is not UTF-8 text \(byte 3\)"):
        load_data(f"text:{path}", gpt(vocab_size=100, max_len=4))
    path.write_bytes(b"abc\0" * 4)
    with pytest.raises(DataError, match=r"holds byte 0 \(at offset 3\), the pad_id of the spec's input `ids`"):  # fmt: skip
        load_data(f"text:{path}", gpt(vocab_size=256, max_len=4, pad_id=0))
    with pytest.raises(DataError, match=r"text data are next-token windows .* but .* is a classifier .*; use digits, npz:PATH or imagefolder:PATH"):  # fmt: skip
        load_data(f"text:{path}", vit())
    with pytest.raises(DataError, match=r"no such file"):
        load_data(f"text:{tmp_path / 'nowhere.txt'}", gpt())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
