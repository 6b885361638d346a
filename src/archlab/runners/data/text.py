"""``text:PATH``: non-overlapping next-token windows of the spec's ``max_len`` over a text file;
byte-level when the vocabulary is 256, else char-level."""

from __future__ import annotations

import hashlib

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
    else:
        tokens, chars = _char_ids(source, raw, name, inp)
        level = f"char-level, {chars} characters"
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
    )


def _char_ids(source: str, raw: bytes, name: str, inp: TokensInput) -> tuple[np.ndarray, int]:
    """A UTF-8 text as char-level ids (sorted distinct characters), and the vocabulary's size."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{source} is not UTF-8 text (byte {exc.start}); char-level reading needs UTF-8, "
            "a byte-level spec (vocab_size 256) reads any bytes"
        ) from exc
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    chars = np.unique(points)
    free = [i for i in range(len(chars) + 1) if i != inp.pad_id]
    ids = np.array(free[: len(chars)], dtype=np.int64)
    needed = int(ids[-1]) + 1 if len(ids) else 0
    if needed > inp.vocab_size:
        pad = f" with the pad id {inp.pad_id} kept free" if inp.pad_id is not None else ""
        raise DataError(
            f"{source} has {len(chars)} distinct characters, needing {needed} ids{pad}, but the "
            f"spec's input `{name}` has vocab_size {inp.vocab_size} (char-level, since it is not "
            f"256); raise vocab_size to {needed}, or use 256 for byte-level"
        )
    return ids[np.searchsorted(chars, points)], len(chars)
