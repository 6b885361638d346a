"""``text:PATH``: non-overlapping next-token windows of the spec's ``max_len`` over a text file;
byte-level when the vocabulary is 256, else char-level. ``TextVocab`` is that mapping between
text and ids, recorded with the run (``TaskData.text_vocab``) and read back to encode a prompt
and decode what the model writes."""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from archlab.runners.data.common import TaskData, check_ids, expect_task, read_bytes, source_path
from archlab.runners.data.errors import DataError
from archlab.runners.data.task import Layout
from archlab.specs.models import TokensInput


def load_text(source: str, arg: str, layout: Layout, seed: int) -> TaskData:
    """Non-overlapping windows of ``max_len`` tokens, targets shifted by one (next token).

    Byte-level when the input's vocab_size is 256 (ids = UTF-8 bytes), else char-level: the
    vocabulary is the text's sorted distinct characters, numbered from 0 and skipping the input's
    pad_id, so no real character is taken for padding.
    """
    expect_task(
        layout, "text data are next-token windows for decoder-only language models", ("lm",)
    )
    raw = read_bytes(source_path(source, arg, "text"))
    name, inp = layout.single_input(source)
    assert isinstance(inp, TokensInput) and layout.vocab is not None
    if inp.vocab_size == 256:
        tokens = np.frombuffer(raw, dtype=np.uint8)
        if inp.pad_id is not None and inp.pad_id in tokens:
            at = int(np.argmax(tokens == inp.pad_id))
            raise DataError(
                f"{source} holds byte {inp.pad_id} (at offset {at}), the pad_id of the spec's "
                f"input `{name}`: it would be masked as padding; remove it or drop the pad_id"
            )
        level = "byte-level"
        vocab = TextVocab("byte")
    else:
        tokens, chars = _char_ids(source, raw, name, inp)
        vocab = TextVocab("char", tuple(chr(c) for c in chars.tolist()), inp.pad_id)
        level = f"char-level, {len(chars)} characters"
    check_ids(tokens, "token ids", layout.vocab, f"the spec's lm_head `{layout.head}`")
    length = inp.max_len
    windows = (len(tokens) - 1) // length
    if windows < 1:
        raise DataError(
            f"{source} has {len(tokens):,} tokens ({level}) but one window of the spec's input "
            f"`{name}` (max_len {length}) needs {length + 1} (inputs plus the next-token "
            "targets); use a longer text or a spec with a smaller max_len"
        )
    ids = torch.from_numpy(tokens.astype(np.int64))
    return TaskData(
        task="lm",
        inputs={name: ids[: windows * length].view(windows, length)},
        targets=ids[1 : windows * length + 1].view(windows, length),
        groups=None,
        classes=None,
        vocab_size=layout.vocab,
        source=source,
        content_sha256=hashlib.sha256(raw).hexdigest(),
        description=(
            f"{source}: {len(raw):,} bytes, {level}, {windows:,} windows of {length} tokens"
        ),
        text_vocab=vocab.record(),
    )


def char_ids(count: int, pad_id: int | None) -> list[int]:
    """The ids of a char-level vocabulary of ``count`` characters, in the characters' sorted
    order: 0, 1, 2, ... skipping ``pad_id``, so that no real character is taken for padding."""
    return [i for i in range(count + 1) if i != pad_id][:count]


@dataclass(frozen=True)
class TextVocab:
    """How a ``text:`` source maps text to token ids, and back.

    ``byte``: the UTF-8 bytes of the text are the ids (vocab_size 256). ``char``: ``chars`` are
    the training text's distinct characters in sorted order, numbered by ``char_ids`` (skipping
    the input's ``pad_id``). A run records ``record()``; ``from_record`` reads it back with the
    pad_id of the run's spec.
    """

    level: Literal["byte", "char"]
    chars: tuple[str, ...] = ()
    pad_id: int | None = None
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = dict(zip(self.chars, char_ids(len(self.chars), self.pad_id), strict=True))
        object.__setattr__(self, "_ids", ids)

    def record(self) -> dict[str, Any]:
        """What a run stores: the level, and a char-level vocabulary's characters as code points
        (a registry stores numbers alike everywhere; PostgreSQL refuses a NUL in text)."""
        if self.level == "byte":
            return {"level": "byte"}
        return {"level": "char", "code_points": [ord(c) for c in self.chars]}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], pad_id: int | None) -> TextVocab:
        if record.get("level") == "byte":
            return cls("byte")
        points = record.get("code_points")
        if record.get("level") != "char" or not isinstance(points, list):
            raise DataError(f"unreadable text vocabulary record {dict(record)!r}")
        return cls("char", tuple(chr(int(p)) for p in points), pad_id)

    def describe(self) -> str:
        if self.level == "byte":
            return "byte-level (UTF-8 bytes)"
        return f"char-level ({len(self.chars)} characters of the training text)"

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``; a character the vocabulary lacks is a DataError naming it."""
        if self.level == "byte":
            try:
                return list(text.encode("utf-8"))
            except UnicodeEncodeError as exc:
                raise DataError(f"the text is not valid Unicode at position {exc.start}") from None
        for position, char in enumerate(text):
            if char not in self._ids:
                known = "".join(self.chars[:200]) + ("..." if len(self.chars) > 200 else "")
                raise DataError(
                    f"the character {char!r} (U+{ord(char):04X}, at position {position}) is not "
                    f"in the model's char-level vocabulary, the {len(self.chars)} characters of "
                    f"its training text: {known!r}"
                )
        return [self._ids[c] for c in text]

    def unused_ids(self, vocab_size: int) -> list[int]:
        """The ids below ``vocab_size`` that stand for no character (a char vocabulary's padding
        and spare ids), which generation should never choose; none for bytes."""
        if self.level == "byte":
            return []
        used = set(self._ids.values())
        return [i for i in range(vocab_size) if i not in used]

    def decoder(self) -> TextDecoder:
        """An incremental decoder: ids in, text out as soon as it is complete."""
        return TextDecoder(self)

    def decode(self, ids: Sequence[int]) -> str:
        decoder = self.decoder()
        return decoder.feed(ids) + decoder.finish()


class TextDecoder:
    """Ids to text piece by piece: a byte-level decoder holds back a character's first bytes
    until its last arrives. Ids that stand for no character (padding, ids past a char-level
    vocabulary, bytes that are not UTF-8) read as U+FFFD."""

    def __init__(self, vocab: TextVocab) -> None:
        self._chars = {i: c for c, i in vocab._ids.items()}
        self._bytes = (
            codecs.getincrementaldecoder("utf-8")(errors="replace")
            if vocab.level == "byte"
            else None
        )

    def feed(self, ids: Sequence[int]) -> str:
        if self._bytes is not None:
            return self._bytes.decode(bytes(i if 0 <= i < 256 else 0xFF for i in ids))
        return "".join(self._chars.get(i, "\ufffd") for i in ids)

    def finish(self) -> str:
        """What is still held back (an unfinished UTF-8 character, as U+FFFD)."""
        return self._bytes.decode(b"", final=True) if self._bytes is not None else ""


def _char_ids(
    source: str, raw: bytes, name: str, inp: TokensInput
) -> tuple[np.ndarray, np.ndarray]:
    """A UTF-8 text as char-level ids, and its sorted distinct characters (as code points)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{source} is not UTF-8 text (byte {exc.start}); char-level reading needs UTF-8, "
            "a byte-level spec (vocab_size 256) reads any bytes"
        ) from exc
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    chars = np.unique(points)
    ids = np.array(char_ids(len(chars), inp.pad_id), dtype=np.int64)
    needed = int(ids[-1]) + 1 if len(ids) else 0
    if needed > inp.vocab_size:
        pad = f" with the pad id {inp.pad_id} kept free" if inp.pad_id is not None else ""
        raise DataError(
            f"{source} has {len(chars)} distinct characters, needing {needed} ids{pad}, but the "
            f"spec's input `{name}` has vocab_size {inp.vocab_size} (char-level, since it is not "
            f"256); raise vocab_size to {needed}, or use 256 for byte-level"
        )
    return ids[np.searchsorted(chars, points)], chars
