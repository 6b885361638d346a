"""``seq2seq:copy|reverse|sort[?n=N&len=L&symbols=A]``: the classic synthetic sanity tasks of
encoder-decoder Transformers, generated from a seed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Literal, get_args
from urllib.parse import parse_qsl

import torch

from archlab.runners.data.common import TaskData, expect_task
from archlab.runners.data.errors import DataError
from archlab.runners.data.task import Layout
from archlab.specs.models import TokensInput

#: Reserved ids of the synthetic seq2seq tasks: 0 = pad, 1 = BOS, 2 = EOS (kept free for variable
#: lengths; the fixed-length tasks need none), data symbols from 3 on.
PAD_ID, BOS_ID, FIRST_SYMBOL = 0, 1, 3
#: Defaults of the seq2seq tasks: examples, source length cap, alphabet size cap.
SEQ2SEQ_N, SEQ2SEQ_MAX_LEN, SEQ2SEQ_MAX_SYMBOLS = 5000, 10, 10
SEQ2SEQ_MAX_N = 1_000_000  # pairs a seq2seq source may ask for (three int64 tensors of n x len)
Seq2SeqTask = Literal["copy", "reverse", "sort"]


def load_seq2seq(source: str, arg: str, layout: Layout, seed: int) -> TaskData:
    """Synthetic copy / reverse / sort pairs, drawn from a ``torch.Generator`` seeded ``seed``.

    Sources are ``len`` symbols drawn uniformly from ids ``3 .. 3 + symbols - 1``; the target is
    the source copied, reversed or sorted; the decoder reads BOS (id 1) followed by the target
    without its last token (teacher forcing). Defaults: n = 5,000 examples (at most 1,000,000),
    len = min(10, the max_len of both inputs), symbols = min(10, the smallest vocabulary - 3).
    Override them as ``seq2seq:reverse?n=2000&len=8&symbols=6``. Every sequence has the same
    length: no padding.
    """
    tasks = get_args(Seq2SeqTask)
    task, _, query = arg.partition("?")
    if task not in tasks:
        raise DataError(
            f"unknown seq2seq task {task!r} in {source!r}; the tasks are "
            + ", ".join(f"seq2seq:{t}" for t in tasks)
        )
    expect_task(layout, f"{source} is encoder-decoder data (source and target)", ("seq2seq",))
    (src_name, src), (tgt_name, tgt) = layout.inputs.items()
    assert isinstance(src, TokensInput) and isinstance(tgt, TokensInput)
    assert layout.vocab is not None
    for inp_name, inp in ((src_name, src), (tgt_name, tgt)):
        if inp.pad_id not in (None, PAD_ID):
            raise DataError(
                f"the seq2seq tasks reserve id {PAD_ID} for padding, {BOS_ID} for BOS and 2 for "
                f"EOS, but the spec's input `{inp_name}` has pad_id {inp.pad_id}; set it to 0"
            )
    vocab = min(src.vocab_size, tgt.vocab_size, layout.vocab)
    if vocab - FIRST_SYMBOL < 2:
        raise DataError(
            f"the seq2seq tasks need at least 2 symbols above the reserved ids 0..2 (vocab_size "
            f">= 5), but the spec's vocabulary is {vocab}; raise vocab_size"
        )
    max_len = min(src.max_len, tgt.max_len)
    limits = {"n": SEQ2SEQ_MAX_N, "len": max_len, "symbols": vocab - FIRST_SYMBOL}
    given = _query(source, query, limits)
    n = given.get("n", SEQ2SEQ_N)
    length = given.get("len", min(SEQ2SEQ_MAX_LEN, max_len))
    symbols = given.get("symbols", min(SEQ2SEQ_MAX_SYMBOLS, vocab - FIRST_SYMBOL))
    generator = torch.Generator().manual_seed(seed)
    sequences = torch.randint(
        FIRST_SYMBOL, FIRST_SYMBOL + symbols, (n, length), generator=generator
    )
    transforms: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "copy": torch.clone,
        "reverse": lambda s: s.flip(1),
        "sort": lambda s: s.sort(dim=1).values,
    }
    target = transforms[task](sequences)
    decoder_in = torch.cat([torch.full((n, 1), BOS_ID), target[:, :-1]], dim=1)
    params = {"task": task, "n": n, "len": length, "symbols": symbols, "seed": seed}
    canonical = json.dumps({"generator": "archlab.seq2seq.v1", **params}, sort_keys=True)
    return TaskData(
        task="seq2seq",
        inputs={src_name: sequences, tgt_name: decoder_in},
        targets=target,
        groups=None,
        classes=None,
        vocab_size=layout.vocab,
        source=source,
        content_sha256=hashlib.sha256(canonical.encode()).hexdigest(),
        description=(
            f"{source}: {n:,} {task} pairs of {length} symbols (ids {FIRST_SYMBOL}.."
            f"{FIRST_SYMBOL + symbols - 1}), decoder input BOS {BOS_ID} + target, seed {seed}"
        ),
    )


def _query(source: str, query: str, limits: dict[str, int]) -> dict[str, int]:
    """The ``?key=value&...`` options of a synthetic source: known keys, integers from 1 to
    their limit (every option has one: an unbounded size would be allocated, not refused)."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
    except ValueError as exc:
        raise DataError(f"cannot parse the options of {source!r}: {exc}") from exc
    values: dict[str, int] = {}
    for key, text in pairs:
        if key not in limits or key in values:
            problem = "repeats" if key in values else "has an unknown option"
            raise DataError(
                f"{source!r} {problem} {key!r}; the options are {', '.join(limits)} "
                "(e.g. seq2seq:reverse?n=2000&len=8)"
            )
        limit = limits[key]
        digits = text.isascii() and text.isdigit() and len(text) <= len(str(limit))
        number = int(text) if digits else None
        if number is None or not 1 <= number <= limit:
            raise DataError(
                f"{source!r}: {key}={text[:40]!r} must be an integer from 1 to {limit:,} "
                "(the maximum) for this spec"
            )
        values[key] = number
    return values
