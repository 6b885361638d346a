"""Data sources for ``arch train``: a ``--data`` string and a spec become checked tensors.

The task follows from the spec (``task_of``): a ``classify`` output is classification, an
``lm_head`` over one tokens input through a decoder is next-token language modelling, an
``lm_head`` over a decoder that cross-attends to an encoder is seq2seq. ``load_data`` then reads
one of these sources and checks that it fits the spec before a single weight is allocated:

- ``digits``: scikit-learn's 1,797 8x8 grey digit images (bundled, no network), 10 classes.
- ``npz:PATH``: arrays ``x``, ``y`` and optionally ``groups`` (classification or language
  modelling; images, token ids or feature sequences, whatever the spec's input takes).
- ``imagefolder:PATH``: one sub-folder per class, images converted and resized to the spec's.
- ``text:PATH``: non-overlapping next-token windows of the spec's ``max_len``; byte-level when
  the vocabulary is 256, else char-level.
- ``seq2seq:copy|reverse|sort[?n=N&len=L&symbols=A]``: the classic synthetic sanity tasks of
  encoder-decoder Transformers, generated from ``seed``.

Every mismatch (channels, image size, classes, vocabulary, length, task, files) is a
``DataError`` whose message names the data's side, the spec's side and how to fix it: the CLI
prints it and exits with code 2. Every source also gets a content hash, recorded with the run, so
a result can be traced to the exact data it came from.

The package holds one module per source (``digits``, ``npz``, ``imagefolder``, ``text``,
``seq2seq``); ``task`` reads what a spec asks of its data, ``common`` holds ``TaskData`` and the
checks every source shares, ``load`` picks the source a ``--data`` string names.
"""

from archlab.runners.data.common import IGNORE_INDEX, SOURCES_FOR, TaskData
from archlab.runners.data.errors import DataError
from archlab.runners.data.load import KINDS, load_data
from archlab.runners.data.seq2seq import (
    BOS_ID,
    FIRST_SYMBOL,
    PAD_ID,
    SEQ2SEQ_MAX_LEN,
    SEQ2SEQ_MAX_N,
    SEQ2SEQ_MAX_SYMBOLS,
    SEQ2SEQ_N,
    Seq2SeqTask,
)
from archlab.runners.data.task import SpecInput, Task, task_of

__all__ = [
    "BOS_ID",
    "FIRST_SYMBOL",
    "IGNORE_INDEX",
    "KINDS",
    "PAD_ID",
    "SEQ2SEQ_MAX_LEN",
    "SEQ2SEQ_MAX_N",
    "SEQ2SEQ_MAX_SYMBOLS",
    "SEQ2SEQ_N",
    "SOURCES_FOR",
    "DataError",
    "Seq2SeqTask",
    "SpecInput",
    "Task",
    "TaskData",
    "load_data",
    "task_of",
]
