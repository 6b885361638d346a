"""What the data sources share: ``TaskData`` (a whole data set as tensors), the checks of data
against the spec's layout (task, image input, labels, token ids, lengths), reading a source's
file and hashing what was read."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archlab.runners.data.errors import DataError
from archlab.runners.data.task import Layout, SpecInput, Task
from archlab.specs.models import FeaturesInput, ImageInput, TokensInput

#: Target value the loss ignores (``torch.nn.functional.cross_entropy``'s default).
IGNORE_INDEX = -100
SOURCES_FOR: dict[Task, str] = {
    "classify": "digits, npz:PATH or imagefolder:PATH",
    "lm": "text:PATH or npz:PATH",
    "seq2seq": "seq2seq:copy, seq2seq:reverse or seq2seq:sort",
}


@dataclass(frozen=True, eq=False)
class TaskData:
    """A whole data set as tensors, ready to be split into folds and batched.

    ``inputs`` are keyed by the spec's input names (dim 0 = examples). ``targets`` are class ids
    ``(N,)`` (classify), next tokens ``(N, T)`` (lm) or target tokens ``(N, T_tgt)`` (seq2seq),
    all int64, with ``-100`` where a position is ignored. ``classes`` is the spec head's class
    count (labels lie in ``[0, classes)``), ``vocab_size`` the output vocabulary.
    ``content_sha256`` identifies what was read: the file bytes (whatever the spec makes of them),
    or for ``seq2seq:`` the generator's resolved parameters and seed. ``text_vocab``: how a
    ``text:`` source turned text into ids (``TextVocab.record()``), recorded with the run so
    that its model can read and write text again (``arch generate``); None for other sources.
    """

    task: Task
    inputs: dict[str, torch.Tensor]
    targets: torch.Tensor
    groups: np.ndarray | None
    classes: int | None
    vocab_size: int | None
    source: str
    content_sha256: str
    description: str
    text_vocab: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        n = len(self)
        lengths = {name: len(t) for name, t in self.inputs.items()}
        if self.groups is not None:
            lengths["groups"] = len(self.groups)
        if any(length != n for length in lengths.values()):
            raise ValueError(f"TaskData rows differ: targets {n}, {lengths}")

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> TaskData:
        """The same data restricted to the rows ``indices`` (in that order): a fold's share."""
        if isinstance(indices, torch.Tensor):
            indices = indices.cpu().numpy()
        rows = np.asarray(indices)
        if rows.size == 0:
            rows = rows.astype(np.int64)
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise TypeError(
                f"subset takes a 1-D sequence of integer row indices, got {rows.dtype} "
                f"of shape {rows.shape}"
            )
        rows = rows.astype(np.int64)
        picked = torch.from_numpy(rows)
        return dataclasses.replace(
            self,
            inputs={name: tensor[picked] for name, tensor in self.inputs.items()},
            targets=self.targets[picked],
            groups=None if self.groups is None else self.groups[rows],
        )

    @property
    def stratify_labels(self) -> np.ndarray | None:
        """Class ids to stratify folds on (classification), else None."""
        return self.targets.numpy().copy() if self.task == "classify" else None


def expect_task(layout: Layout, what: str, tasks: tuple[Task, ...]) -> None:
    """Refuse a source meant for other tasks than the spec's, saying which sources fit it."""
    if layout.task not in tasks:
        raise DataError(
            f"{what}, but {layout.describe()}; use {SOURCES_FOR[layout.task]} for this spec"
        )


def image_input(layout: Layout, what: str) -> tuple[str, ImageInput]:
    """The image input of a classifier, or a DataError naming the input it has instead."""
    expect_task(layout, f"{what} is image classification data", ("classify",))
    name, inp = layout.single_input(what)
    if not isinstance(inp, ImageInput):
        raise DataError(
            f"{what} holds images, but the spec's input `{name}` is of kind {inp.kind}, not "
            f"image; use npz:PATH with x shaped for `{name}` ({input_layout(inp)})"
        )
    return name, inp


def input_layout(inp: SpecInput) -> str:
    """The array layout an input takes, in words."""
    if isinstance(inp, ImageInput):
        return f"float or uint8 images (N, {inp.channels}, {inp.size[0]}, {inp.size[1]})"
    if isinstance(inp, TokensInput):
        return f"integer token ids (N, T), T <= {inp.max_len}, ids < {inp.vocab_size}"
    return f"float features (N, T, {inp.dim}), T <= {inp.max_len}"


def source_path(source: str, arg: str, kind: str, folder: bool = False) -> Path:
    """The existing file (or folder) a ``kind:PATH`` source names."""
    if not arg:
        raise DataError(f"{source!r} names no path; write {kind}:PATH")
    path = Path(arg).expanduser()
    what = "folder" if folder else "file"
    if not path.exists():
        raise DataError(f"{source}: no such {what} {str(path)!r}")
    if path.is_dir() != folder:
        found = "a folder" if path.is_dir() else "a file"
        raise DataError(f"{source}: {str(path)!r} is {found}; {kind}: reads a {what}")
    return path


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc


def hash_arrays(*arrays: np.ndarray) -> str:
    """SHA-256 over each array's dtype, shape and bytes (C order)."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def span(values: np.ndarray) -> str:
    return f"{int(values.min())}..{int(values.max())}"


def check_labels(labels: np.ndarray, layout: Layout) -> None:
    """Class ids must lie in [0, classes) of the spec's classify head."""
    classes = layout.classes
    assert classes is not None
    if labels.min() < 0 or labels.max() >= classes:
        raise DataError(
            f"the data has labels {span(labels)} but the spec's head `{layout.head}` has "
            f"{classes} classes (labels must lie in 0..{classes - 1}); relabel the data or set "
            f"the head's classes to at least {int(labels.max()) + 1}"
        )


def check_ids(ids: np.ndarray, what: str, limit: int, whose: str, targets: bool = False) -> None:
    """Token ids must lie in [0, limit); targets may also be -100 (ignored by the loss)."""
    if targets:
        ids = ids[ids.astype(np.int64) != IGNORE_INDEX]
    if ids.size and (ids.min() < 0 or ids.max() >= limit):
        raise DataError(
            f"the data's {what} are {span(ids)} but {whose} has vocab_size {limit} (ids must "
            f"lie in 0..{limit - 1}); re-tokenize the data or raise the spec's vocab_size"
        )


def check_length(length: int, name: str, inp: TokensInput | FeaturesInput) -> None:
    if length > inp.max_len:
        raise DataError(
            f"the data has sequences of length {length} but the spec's input `{name}` has "
            f"max_len {inp.max_len}; truncate the sequences or raise max_len"
        )
