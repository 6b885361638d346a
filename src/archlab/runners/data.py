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
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import parse_qsl

import numpy as np
import torch

from archlab.errors import UserInputError
from archlab.specs.analysis import LMHeadPlan, analyze
from archlab.specs.models import (
    ClassifyNode,
    DecoderNode,
    FeaturesInput,
    ImageInput,
    LMHeadNode,
    Spec,
    TokensInput,
)

Task = Literal["classify", "lm", "seq2seq"]
SpecInput = TokensInput | ImageInput | FeaturesInput

#: Target value the loss ignores (``torch.nn.functional.cross_entropy``'s default).
IGNORE_INDEX = -100
#: Reserved ids of the synthetic seq2seq tasks: 0 = pad, 1 = BOS, 2 = EOS (kept free for variable
#: lengths; the fixed-length tasks need none), data symbols from 3 on.
PAD_ID, BOS_ID, FIRST_SYMBOL = 0, 1, 3
#: Defaults of the seq2seq tasks: examples, source length cap, alphabet size cap.
SEQ2SEQ_N, SEQ2SEQ_MAX_LEN, SEQ2SEQ_MAX_SYMBOLS = 5000, 10, 10
SEQ2SEQ_MAX_N = 1_000_000  # pairs a seq2seq source may ask for (three int64 tensors of n x len)
Seq2SeqTask = Literal["copy", "reverse", "sort"]

KINDS = "digits, npz:PATH, imagefolder:PATH, text:PATH, seq2seq:copy|reverse|sort"
SOURCES_FOR: dict[Task, str] = {
    "classify": "digits, npz:PATH or imagefolder:PATH",
    "lm": "text:PATH or npz:PATH",
    "seq2seq": "seq2seq:copy, seq2seq:reverse or seq2seq:sort",
}


class DataError(UserInputError):
    """Data that cannot be read, or that does not fit the spec; the message says how to fix it."""


@dataclass(frozen=True, eq=False)
class TaskData:
    """A whole data set as tensors, ready to be split into folds and batched.

    ``inputs`` are keyed by the spec's input names (dim 0 = examples). ``targets`` are class ids
    ``(N,)`` (classify), next tokens ``(N, T)`` (lm) or target tokens ``(N, T_tgt)`` (seq2seq),
    all int64, with ``-100`` where a position is ignored. ``classes`` is the spec head's class
    count (labels lie in ``[0, classes)``), ``vocab_size`` the output vocabulary.
    ``content_sha256`` identifies what was read: the file bytes (whatever the spec makes of them),
    or for ``seq2seq:`` the generator's resolved parameters and seed.
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


# ------------------------------------------------------------------------------ the spec's task


@dataclass(frozen=True)
class _Layout:
    """What a spec asks of its data: the task, its inputs by role, and the head's sizes.

    ``inputs`` is ordered by role: the one input of classify and lm specs, or (source, target)
    for seq2seq. ``vocab`` is the lm_head's vocabulary.
    """

    task: Task
    name: str
    head: str
    inputs: dict[str, SpecInput]
    classes: int | None = None
    vocab: int | None = None

    def describe(self) -> str:
        """The spec's side of a task mismatch, in words."""
        names = list(self.inputs)
        if self.task == "classify":
            kind = self.inputs[names[0]].kind
            return (
                f"{self.name} is a classifier (`{self.head}`: classify, {self.classes} classes, "
                f"on the {kind} input `{names[0]}`)"
            )
        if self.task == "lm":
            return (
                f"{self.name} is a decoder-only language model (`{self.head}`: lm_head on the "
                f"tokens input `{names[0]}`)"
            )
        return (
            f"{self.name} is an encoder-decoder (`{self.head}`: lm_head; source `{names[0]}`, "
            f"target `{names[1]}`)"
        )

    def single_input(self) -> tuple[str, SpecInput]:
        """The one input of a classify or lm spec."""
        ((name, inp),) = self.inputs.items()
        return name, inp


def task_of(spec: Spec) -> Task:
    """The training task a spec's output implies; DataError if it has no trainable head."""
    return _layout(spec).task


def _layout(spec: Spec) -> _Layout:
    graph = analyze(spec)
    name = f"the spec `{spec.name}`" if spec.name else "the spec"
    supported = (
        "arch train supports one output: a `classify` node (classification) or an `lm_head` "
        "(a decoder-only language model, or an encoder-decoder for seq2seq)"
    )

    def upstream(ref: str) -> set[str]:
        seen, todo = set(), [ref]
        while todo:
            ref = todo.pop()
            if ref not in seen:
                seen.add(ref)
                todo.extend(graph.nodes[ref].inputs)
        return seen

    def inputs_of(ref: str) -> list[str]:
        above = upstream(ref)
        return [n for n in spec.inputs if n in above]

    if len(spec.outputs) != 1:
        listed = ", ".join(f"`{o}`" for o in spec.outputs)
        raise DataError(f"{name} has {len(spec.outputs)} outputs ({listed}); {supported}")
    head = spec.outputs[0]
    node = spec.nodes[head]
    feeding = inputs_of(head)
    by_role = {n: spec.inputs[n] for n in feeding}
    if isinstance(node, ClassifyNode):
        if len(feeding) != 1:
            raise DataError(
                f"{name}'s head `{head}` reads {len(feeding)} inputs ({', '.join(feeding)}); "
                "the data sources feed classifiers with one input"
            )
        return _Layout("classify", name, head, by_role, classes=node.classes)
    if isinstance(node, LMHeadNode):
        others = [n for n in feeding if not isinstance(spec.inputs[n], TokensInput)]
        if others:
            raise DataError(
                f"{name}'s lm_head `{head}` reads the {spec.inputs[others[0]].kind} input "
                f"`{others[0]}`; language-model and seq2seq data are token ids, so every input "
                "must be of kind tokens"
            )
        vocab = graph.nodes[head].plan_as(LMHeadPlan).vocab
        above = upstream(head)
        decoders = [d for n, d in spec.nodes.items() if n in above and isinstance(d, DecoderNode)]
        crossing = [(d.input, d.memory) for d in decoders if d.memory is not None]
        if not crossing and decoders and len(feeding) == 1:
            return _Layout("lm", name, head, by_role, vocab=vocab)
        if len(crossing) == 1:
            tgt, src = (inputs_of(ref) for ref in crossing[0])
            if len(src) == 1 and len(tgt) == 1 and src != tgt and len(feeding) == 2:
                roles = {src[0]: spec.inputs[src[0]], tgt[0]: spec.inputs[tgt[0]]}
                return _Layout("seq2seq", name, head, roles, vocab=vocab)
        if decoders:
            found = f"reads the token inputs {', '.join(f'`{n}`' for n in feeding)} in a layout"
        else:
            found = "sits on a bidirectional encoder (masked-LM training), a layout"
        raise DataError(
            f"{name}'s lm_head `{head}` {found} that the data sources do not cover; next-token "
            "data needs a decoder over one tokens input, seq2seq data a decoder over one target "
            "input cross-attending to an encoder over one source input"
        )
    raise DataError(f"{name}'s output `{head}` is a `{node.op}` node; {supported}")


# ------------------------------------------------------------------------------------ loading


def load_data(source: str, spec: Spec, *, seed: int = 0) -> TaskData:
    """Read the ``--data`` source ``source`` for ``spec`` and check it fits; DataError if not.

    ``seed`` only matters for the synthetic ``seq2seq:`` tasks, which it generates.
    """
    layout = _layout(spec)
    kind, sep, arg = source.partition(":")
    loaders: dict[str, Callable[[str, str, _Layout, int], TaskData]] = {
        "npz": _load_npz,
        "imagefolder": _load_imagefolder,
        "text": _load_text,
        "seq2seq": _load_seq2seq,
    }
    if source == "digits":
        return _load_digits(source, layout)
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


def _expect_task(layout: _Layout, what: str, tasks: tuple[Task, ...]) -> None:
    """Refuse a source meant for other tasks than the spec's, saying which sources fit it."""
    if layout.task not in tasks:
        raise DataError(
            f"{what}, but {layout.describe()}; use {SOURCES_FOR[layout.task]} for this spec"
        )


def _image_input(layout: _Layout, what: str) -> tuple[str, ImageInput]:
    """The image input of a classifier, or a DataError naming the input it has instead."""
    _expect_task(layout, f"{what} is image classification data", ("classify",))
    name, inp = layout.single_input()
    if not isinstance(inp, ImageInput):
        raise DataError(
            f"{what} holds images, but the spec's input `{name}` is of kind {inp.kind}, not "
            f"image; use npz:PATH with x shaped for `{name}` ({_layout_of(inp)})"
        )
    return name, inp


def _layout_of(inp: SpecInput) -> str:
    """The array layout an input takes, in words."""
    if isinstance(inp, ImageInput):
        return f"float or uint8 images (N, {inp.channels}, {inp.size[0]}, {inp.size[1]})"
    if isinstance(inp, TokensInput):
        return f"integer token ids (N, T), T <= {inp.max_len}, ids < {inp.vocab_size}"
    return f"float features (N, T, {inp.dim}), T <= {inp.max_len}"


def _path(source: str, arg: str, kind: str, folder: bool = False) -> Path:
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


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc


def _hash_arrays(*arrays: np.ndarray) -> str:
    """SHA-256 over each array's dtype, shape and bytes (C order)."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _span(values: np.ndarray) -> str:
    return f"{int(values.min())}..{int(values.max())}"


def _check_labels(labels: np.ndarray, layout: _Layout) -> None:
    """Class ids must lie in [0, classes) of the spec's classify head."""
    classes = layout.classes
    assert classes is not None
    if labels.min() < 0 or labels.max() >= classes:
        raise DataError(
            f"the data has labels {_span(labels)} but the spec's head `{layout.head}` has "
            f"{classes} classes (labels must lie in 0..{classes - 1}); relabel the data or set "
            f"the head's classes to at least {int(labels.max()) + 1}"
        )


def _check_ids(ids: np.ndarray, what: str, limit: int, whose: str, targets: bool = False) -> None:
    """Token ids must lie in [0, limit); targets may also be -100 (ignored by the loss)."""
    if targets:
        ids = ids[ids.astype(np.int64) != IGNORE_INDEX]
    if ids.size and (ids.min() < 0 or ids.max() >= limit):
        raise DataError(
            f"the data's {what} are {_span(ids)} but {whose} has vocab_size {limit} (ids must "
            f"lie in 0..{limit - 1}); re-tokenize the data or raise the spec's vocab_size"
        )


def _check_length(length: int, name: str, inp: TokensInput | FeaturesInput) -> None:
    if length > inp.max_len:
        raise DataError(
            f"the data has sequences of length {length} but the spec's input `{name}` has "
            f"max_len {inp.max_len}; truncate the sequences or raise max_len"
        )


# ---------------------------------------------------------------------------------- digits


def _load_digits(source: str, layout: _Layout) -> TaskData:
    """scikit-learn's digits: float32 (1797, 1, 8, 8) in [0, 1] (pixel values 0..16 / 16)."""
    name, inp = _image_input(layout, "digits")
    size = tuple(inp.size)
    if inp.channels != 1 or size != (8, 8):
        raise DataError(
            f"digits are 1-channel 8x8 images, but the spec's input `{name}` takes "
            f"{inp.channels}-channel {size[0]}x{size[1]} images; set "
            '"channels": 1, "size": 8 (as in specs/vit-tiny-digits.json)'
        )
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = np.asarray(bunch.images), np.asarray(bunch.target)
    _check_labels(labels, layout)
    x = torch.from_numpy((images / 16.0).astype(np.float32)).unsqueeze(1)
    n, k = len(labels), len(np.unique(labels))
    return TaskData(
        task="classify",
        inputs={name: x},
        targets=torch.from_numpy(labels.astype(np.int64)),
        groups=None,
        classes=layout.classes,
        vocab_size=None,
        source=source,
        content_sha256=_hash_arrays(images.astype(np.float64), labels.astype(np.int64)),
        description=f"digits: {n:,} 8x8 grey images, {k} classes",
    )


# ------------------------------------------------------------------------------------- npz


def _load_npz(source: str, arg: str, layout: _Layout, seed: int) -> TaskData:
    """Arrays ``x``, ``y`` (and ``groups``) for a classifier or a language model."""
    _expect_task(
        layout, "npz data are x/y arrays for classifiers and language models", ("classify", "lm")
    )
    raw = _read(_path(source, arg, "npz"))
    arrays = _npz_arrays(source, raw)
    x, y, groups = arrays["x"], arrays["y"], arrays.get("groups")
    if x.ndim == 0:
        raise DataError(f"{source}: x is a scalar; it must hold one row per example")
    n = len(x)
    for what, array in (("y", y), ("groups", groups)):
        if array is not None and (array.ndim == 0 or len(array) != n):
            raise DataError(
                f"{source}: x has {n:,} examples but {what} has "
                f"{'a scalar' if array.ndim == 0 else f'{len(array):,}'}; they must match row for row"
            )
    if n == 0:
        raise DataError(f"{source} holds no examples (x has shape {x.shape})")
    if groups is not None and groups.ndim != 1:
        raise DataError(f"{source}: groups must be one label per example (N,), got {groups.shape}")
    name, inp = layout.single_input()
    inputs = {name: _npz_x(x, name, inp)}
    if layout.task == "classify":
        targets = _npz_labels(y, layout)
        counted = f"{len(np.unique(y))} classes (labels {_span(y)})"
    else:
        targets = _npz_next_tokens(y, x.shape, layout)
        counted = f"vocab_size {layout.vocab}"
    return TaskData(
        task=layout.task,
        inputs=inputs,
        targets=targets,
        groups=groups,
        classes=layout.classes,
        vocab_size=layout.vocab,
        source=source,
        content_sha256=hashlib.sha256(raw).hexdigest(),
        description=f"{source}: {n:,} examples, x {x.dtype} {tuple(x.shape)}, {counted}",
    )


def _npz_arrays(source: str, raw: bytes) -> dict[str, np.ndarray]:
    """The arrays of an npz archive, checked for ``x``, ``y`` and nothing unexpected. Nothing
    is unpickled: object arrays are refused."""
    save = "save x and y with np.savez(path, x=x, y=y)"
    if not raw:
        raise DataError(f"{source} is empty (0 bytes), not an .npz archive; {save}")
    if not raw.startswith((b"PK", b"\x93NUMPY")):  # a zip archive, or a single .npy array
        raise DataError(f"{source} is not a readable .npz archive (no zip of arrays); {save}")
    try:
        archive = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{source} is not a readable .npz archive ({exc}); {save}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"{source} holds a single array (.npy); save x and y with np.savez(path, x=x, y=y)"
        )
    with archive:
        names = set(archive.files)
        usage = "the arrays are x, y and optionally groups: np.savez(path, x=x, y=y, groups=g)"
        missing = sorted({"x", "y"} - names)
        unexpected = sorted(names - {"x", "y", "groups"})
        if missing or unexpected:
            problem = f"has no {' or '.join(missing)}" if missing else "has unexpected arrays"
            raise DataError(f"{source} {problem} (it holds {sorted(names)}); {usage}")
        try:
            return {key: archive[key] for key in sorted(names)}
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise DataError(
                    f"{source} holds object arrays (pickled Python objects), which archlab never "
                    "loads: store x, y and groups as numeric arrays"
                ) from None
            raise DataError(f"{source}: cannot read its arrays ({exc})") from None
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{source}: cannot read its arrays ({exc})") from None


def _npz_x(x: np.ndarray, name: str, inp: SpecInput) -> torch.Tensor:
    """``x`` checked against the spec's input and converted to its tensor."""
    found = f"x is {x.dtype} {tuple(x.shape)}"
    wanted = f"the spec's input `{name}` takes {_layout_of(inp)}"
    if isinstance(inp, ImageInput):
        if x.ndim == 3 and inp.channels == 1:
            x = x[:, None]
        if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
            raise DataError(f"{found} but {wanted}")
        if x.ndim != 4:
            raise DataError(f"{found} but {wanted}")
        if x.shape[1] != inp.channels:
            fix = f"convert the images or set the input's channels to {x.shape[1]}"
            if x.shape[-1] == inp.channels:
                fix = "x looks channels-last: store x.transpose(0, 3, 1, 2)"
            raise DataError(
                f"x has {x.shape[1]} channels (shape {tuple(x.shape)}, read as (N, C, H, W)) but "
                f"the spec's input `{name}` takes {inp.channels}-channel images; {fix}"
            )
        height, width = inp.size
        if x.shape[2:] != (height, width):
            raise DataError(
                f"x holds {x.shape[2]}x{x.shape[3]} images but the spec's input `{name}` has size "
                f"{height}x{width} (H x W); resize the images or change the spec's size"
            )
        images = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        _check_finite(images)
        return torch.from_numpy(images)
    if isinstance(inp, TokensInput):
        if not np.issubdtype(x.dtype, np.integer) or x.ndim != 2:
            raise DataError(f"{found} but {wanted}")
        _check_length(x.shape[1], name, inp)
        _check_ids(x, "token ids in x", inp.vocab_size, f"the spec's input `{name}`")
        return torch.from_numpy(x.astype(np.int64))
    if not np.issubdtype(x.dtype, np.floating) or x.ndim != 3 or x.shape[2] != inp.dim:
        raise DataError(f"{found} but {wanted}")
    _check_length(x.shape[1], name, inp)
    features = x.astype(np.float32)
    _check_finite(features)
    return torch.from_numpy(features)


def _check_finite(x: np.ndarray) -> None:
    if not np.isfinite(x).all():
        raise DataError("x holds NaN or infinite values; clean the data before training")


def _npz_labels(y: np.ndarray, layout: _Layout) -> torch.Tensor:
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise DataError(
            f"y is {y.dtype} {tuple(y.shape)} but {layout.describe()}: y must be integer class "
            "ids (N,) (cast with y.astype(np.int64))"
        )
    _check_labels(y, layout)
    return torch.from_numpy(y.astype(np.int64))


def _npz_next_tokens(y: np.ndarray, x_shape: tuple[int, ...], layout: _Layout) -> torch.Tensor:
    if not np.issubdtype(y.dtype, np.integer) or y.shape != x_shape:
        raise DataError(
            f"y is {y.dtype} {tuple(y.shape)} but {layout.describe()}: y must be the integer "
            f"next tokens of x, shaped like x {tuple(x_shape)} (-100 where ignored)"
        )
    assert layout.vocab is not None
    _check_ids(y, "target ids in y", layout.vocab, f"the spec's lm_head `{layout.head}`", True)
    return torch.from_numpy(y.astype(np.int64))


# ----------------------------------------------------------------------------- imagefolder


def _load_imagefolder(source: str, arg: str, layout: _Layout, seed: int) -> TaskData:
    """One sub-folder per class (sorted names = ids), images converted and resized to the spec's.

    Hidden files and folders (names starting with '.') are skipped; images inside a class folder
    may sit in nested folders. Any other file is an error, so no image is silently left out.
    """
    name, inp = _image_input(layout, source)
    modes = {1: "L", 3: "RGB"}
    if inp.channels not in modes:
        raise DataError(
            f"imagefolder converts images to grey (L, 1 channel) or RGB (3 channels), but the "
            f"spec's input `{name}` has {inp.channels} channels; use npz:PATH for other channels"
        )
    root = _path(source, arg, "imagefolder", folder=True)
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    stray = [p.name for p in entries if not p.is_dir()]
    if stray:
        raise DataError(
            f"{source}: found the file {stray[0]!r} beside the class folders; imagefolder expects "
            "only one sub-folder per class (move it into one, or remove it)"
        )
    classes = [p.name for p in entries]
    if not classes:
        raise DataError(f"{source}: no class sub-folders in {str(root)!r}; the data set is empty")
    assert layout.classes is not None
    if len(classes) > layout.classes:
        raise DataError(
            f"the data has labels 0..{len(classes) - 1} ({len(classes)} class folders) but the "
            f"spec's head `{layout.head}` has {layout.classes} classes; set the head's classes "
            f"to {len(classes)} or remove folders"
        )
    from PIL import Image

    height, width = inp.size
    mode = modes[inp.channels]
    images: list[np.ndarray] = []
    labels: list[int] = []
    hashed: list[tuple[str, bytes]] = []
    for label, folder in enumerate(classes):
        files = sorted(
            p
            for p in (root / folder).rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if not files:
            raise DataError(
                f"{source}: the class folder {folder!r} holds no images; add some or remove it"
            )
        for file in files:
            raw = _read(file)
            try:
                with Image.open(io.BytesIO(raw)) as image:
                    pixels = image.convert(mode).resize((width, height), Image.Resampling.BILINEAR)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise DataError(
                    f"{source}: {str(file)!r} is not an image Pillow can read ({exc}); class "
                    "folders must hold only images"
                ) from exc
            images.append(np.asarray(pixels, dtype=np.float32).reshape(height, width, -1))
            labels.append(label)
            hashed.append((file.relative_to(root).as_posix(), hashlib.sha256(raw).digest()))
    digest = hashlib.sha256()
    for rel, file_hash in sorted(hashed):
        digest.update(rel.encode() + b"\0" + file_hash)
    x = torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2) / np.float32(255.0))
    shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
    return TaskData(
        task="classify",
        inputs={name: x.contiguous()},
        targets=torch.tensor(labels, dtype=torch.int64),
        groups=None,
        classes=layout.classes,
        vocab_size=None,
        source=source,
        content_sha256=digest.hexdigest(),
        description=(
            f"{source}: {len(labels):,} images in {len(classes)} classes ({shown}), "
            f"as {height}x{width} {mode}"
        ),
    )


# ------------------------------------------------------------------------------------ text


def _load_text(source: str, arg: str, layout: _Layout, seed: int) -> TaskData:
    """Non-overlapping windows of ``max_len`` tokens, targets shifted by one (next token).

    Byte-level when the input's vocab_size is 256 (ids = UTF-8 bytes), else char-level: the
    vocabulary is the text's sorted distinct characters, numbered from 0 and skipping the input's
    pad_id, so no real character is taken for padding.
    """
    _expect_task(
        layout, "text data are next-token windows for decoder-only language models", ("lm",)
    )
    raw = _read(_path(source, arg, "text"))
    name, inp = layout.single_input()
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
    _check_ids(tokens, "token ids", layout.vocab, f"the spec's lm_head `{layout.head}`")
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


# --------------------------------------------------------------------------------- seq2seq


def _load_seq2seq(source: str, arg: str, layout: _Layout, seed: int) -> TaskData:
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
    _expect_task(layout, f"{source} is encoder-decoder data (source and target)", ("seq2seq",))
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
