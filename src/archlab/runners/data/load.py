"""``load_data``: a ``--data`` string picks its source's loader, which reads and checks it
against the spec; an unknown kind is refused with the list of kinds and a hint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from archlab.runners.data.common import TaskData
from archlab.runners.data.digits import load_digits
from archlab.runners.data.errors import DataError
from archlab.runners.data.imagefolder import load_imagefolder
from archlab.runners.data.npz import load_npz
from archlab.runners.data.seq2seq import load_seq2seq
from archlab.runners.data.task import Layout, spec_layout
from archlab.runners.data.text import load_text
from archlab.specs.models import Spec

KINDS = "digits, npz:PATH, imagefolder:PATH, text:PATH, seq2seq:copy|reverse|sort"


def load_data(source: str, spec: Spec, *, seed: int = 0) -> TaskData:
    """Read the ``--data`` source ``source`` for ``spec`` and check it fits; DataError if not.

    ``seed`` only matters for the synthetic ``seq2seq:`` tasks, which it generates.
    """
    layout = spec_layout(spec)
    kind, sep, arg = source.partition(":")
    loaders: dict[str, Callable[[str, str, Layout, int], TaskData]] = {
        "npz": load_npz,
        "imagefolder": load_imagefolder,
        "text": load_text,
        "seq2seq": load_seq2seq,
    }
    if source == "digits":
        return load_digits(source, layout)
    if sep and kind in loaders:
        return loaders[kind](source, arg, layout, seed)
    hint = ""
    if Path(source).suffix == ".npz":
        hint = f"; for an npz file write npz:{source}"
    elif Path(source).is_dir():
        hint = f"; for a folder of class sub-folders write imagefolder:{source}"
    elif Path(source).suffix == ".txt":
        hint = f"; for a text file write text:{source}"
    raise DataError(f"unknown data source {source!r}; the kinds are: {KINDS}{hint}")
