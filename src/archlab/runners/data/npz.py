"""``npz:PATH``: arrays ``x``, ``y`` and optionally ``groups``, for a classifier or a language
model (images, token ids or feature sequences, whatever the spec's input takes). Nothing in the
archive is unpickled."""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import torch

from archlab.runners.data.common import (
    TaskData,
    check_ids,
    check_labels,
    check_length,
    expect_task,
    input_layout,
    read_bytes,
    source_path,
    span,
)
from archlab.runners.data.errors import DataError
from archlab.runners.data.task import Layout, SpecInput
from archlab.specs.models import ImageInput, TokensInput


def load_npz(source: str, arg: str, layout: Layout, seed: int) -> TaskData:
    """Arrays ``x``, ``y`` (and ``groups``) for a classifier or a language model."""
    expect_task(
        layout, "npz data are x/y arrays for classifiers and language models", ("classify", "lm")
    )
    raw = read_bytes(source_path(source, arg, "npz"))
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
        counted = f"{len(np.unique(y))} classes (labels {span(y)})"
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
    wanted = f"the spec's input `{name}` takes {input_layout(inp)}"
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
        check_length(x.shape[1], name, inp)
        check_ids(x, "token ids in x", inp.vocab_size, f"the spec's input `{name}`")
        return torch.from_numpy(x.astype(np.int64))
    if not np.issubdtype(x.dtype, np.floating) or x.ndim != 3 or x.shape[2] != inp.dim:
        raise DataError(f"{found} but {wanted}")
    check_length(x.shape[1], name, inp)
    features = x.astype(np.float32)
    _check_finite(features)
    return torch.from_numpy(features)


def _check_finite(x: np.ndarray) -> None:
    if not np.isfinite(x).all():
        raise DataError("x holds NaN or infinite values; clean the data before training")


def _npz_labels(y: np.ndarray, layout: Layout) -> torch.Tensor:
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise DataError(
            f"y is {y.dtype} {tuple(y.shape)} but {layout.describe()}: y must be integer class "
            "ids (N,) (cast with y.astype(np.int64))"
        )
    check_labels(y, layout)
    return torch.from_numpy(y.astype(np.int64))


def _npz_next_tokens(y: np.ndarray, x_shape: tuple[int, ...], layout: Layout) -> torch.Tensor:
    if not np.issubdtype(y.dtype, np.integer) or y.shape != x_shape:
        raise DataError(
            f"y is {y.dtype} {tuple(y.shape)} but {layout.describe()}: y must be the integer "
            f"next tokens of x, shaped like x {tuple(x_shape)} (-100 where ignored)"
        )
    assert layout.vocab is not None
    check_ids(y, "target ids in y", layout.vocab, f"the spec's lm_head `{layout.head}`", True)
    return torch.from_numpy(y.astype(np.int64))
