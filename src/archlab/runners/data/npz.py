"""``npz:PATH``: arrays ``x``, ``y`` and optionally ``groups``, for a classifier or a language
model (images, token ids or feature sequences, whatever the spec's input takes). ``x`` feeds the
spec's first input; a head that reads further inputs (BERT's ``token_types``) takes an array
named after each, and a sequence input ``NAME`` may come with ``NAME_mask`` (True = real token)
for padded rows. Nothing in the archive is unpickled."""

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
    """Arrays ``x``, ``y`` (and ``groups``) for a classifier or a language model; an array named
    after each further input the head reads, and ``<input>_mask`` arrays where given."""
    expect_task(
        layout, "npz data are x/y arrays for classifiers and language models", ("classify", "lm")
    )
    raw = read_bytes(source_path(source, arg, "npz"))
    names = list(layout.inputs)
    fields = _fields(layout)
    arrays = _npz_arrays(source, raw, fields)
    x, y, groups = arrays["x"], arrays["y"], arrays.get("groups")
    if x.ndim == 0:
        raise DataError(f"{source}: x is a scalar; it must hold one row per example")
    n = len(x)
    for what, array in arrays.items():
        if what != "x" and (array.ndim == 0 or len(array) != n):
            raise DataError(
                f"{source}: x has {n:,} examples but {what} has "
                f"{'a scalar' if array.ndim == 0 else f'{len(array):,}'}; they must match row for row"
            )
    if n == 0:
        raise DataError(f"{source} holds no examples (x has shape {x.shape})")
    if groups is not None and groups.ndim != 1:
        raise DataError(f"{source}: groups must be one label per example (N,), got {groups.shape}")
    missing = [name for name in names[1:] if name not in arrays]
    if missing:
        raise DataError(
            f"{source} has no array for the spec's input{'s' if len(missing) > 1 else ''} "
            f"{', '.join(f'`{m}`' for m in missing)}: x feeds `{names[0]}`, and every further "
            f"input the head reads needs an array of its own name (for BERT's segment ids of "
            f"single-segment text: np.savez(path, x=ids, {missing[0]}=np.zeros_like(ids), y=y))"
        )
    by_input = {name: arrays["x" if i == 0 else name] for i, name in enumerate(names)}
    inputs = {
        name: _npz_x(by_input[name], name, layout.inputs[name], "x" if i == 0 else name)
        for i, name in enumerate(names)
    }
    for name in names:
        if f"{name}_mask" in arrays:
            inputs[f"{name}_mask"] = _npz_mask(arrays[f"{name}_mask"], name, inputs[name])
    if layout.task == "classify":
        targets = _npz_labels(y, layout)
        counted = f"{len(np.unique(y))} classes (labels {span(y)})"
    else:
        targets = _npz_next_tokens(y, x.shape, layout)
        counted = f"vocab_size {layout.vocab}"
    further = "".join(
        f", {k} {arrays[k].dtype} {tuple(arrays[k].shape)}" for k in arrays if k in fields[3:]
    )
    return TaskData(
        task=layout.task,
        inputs=inputs,
        targets=targets,
        groups=groups,
        classes=layout.classes,
        vocab_size=layout.vocab,
        source=source,
        content_sha256=hashlib.sha256(raw).hexdigest(),
        description=f"{source}: {n:,} examples, x {x.dtype} {tuple(x.shape)}{further}, {counted}",
    )


def _fields(layout: Layout) -> list[str]:
    """The arrays an archive may hold for ``layout``: ``x``, ``y``, ``groups``, then one per
    further input and a ``<input>_mask`` per sequence input (True or 1 = a real token)."""
    names = list(layout.inputs)
    masks = [f"{n}_mask" for n, inp in layout.inputs.items() if not isinstance(inp, ImageInput)]
    fields = ["x", "y", "groups", *names[1:], *masks]
    clashes = sorted({f for f in fields[3:] if f in ("x", "y", "groups")})
    if clashes:
        raise DataError(
            f"{layout.name} has an input named {clashes[0]!r}, which npz data reserve for "
            "x (first input), y (targets) and groups; rename the spec's input"
        )
    return fields


def _npz_arrays(source: str, raw: bytes, fields: list[str]) -> dict[str, np.ndarray]:
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
        usage = (
            f"the arrays are x, y and optionally {', '.join(fields[2:])}: "
            "np.savez(path, x=x, y=y, groups=g)"
        )
        missing = sorted({"x", "y"} - names)
        unexpected = sorted(names - set(fields))
        if missing or unexpected:
            problem = f"has no {' or '.join(missing)}" if missing else "has unexpected arrays"
            raise DataError(f"{source} {problem} (it holds {sorted(names)}); {usage}")
        try:
            return {key: archive[key] for key in fields if key in names}
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise DataError(
                    f"{source} holds object arrays (pickled Python objects), which archlab never "
                    "loads: store x, y and groups as numeric arrays"
                ) from None
            raise DataError(f"{source}: cannot read its arrays ({exc})") from None
        except (OSError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{source}: cannot read its arrays ({exc})") from None


def _npz_mask(mask: np.ndarray, name: str, values: torch.Tensor) -> torch.Tensor:
    """``<name>_mask`` checked against its input's array: (N, T) of bools or 0/1, True = real
    token, at least one real token per row."""
    field = f"{name}_mask"
    shape = tuple(values.shape[:2])
    is_binary = mask.dtype == np.bool_ or (
        np.issubdtype(mask.dtype, np.integer) and np.isin(mask, (0, 1)).all()
    )
    if mask.shape != shape or not is_binary:
        raise DataError(
            f"{field} is {mask.dtype} {tuple(mask.shape)} but it must be bools or 0/1 shaped like "
            f"the input `{name}`'s tokens {shape} (True or 1 = a real token, False or 0 = padding)"
        )
    real = mask.astype(bool)
    empty = np.flatnonzero(~real.any(axis=1))
    if empty.size:
        raise DataError(
            f"{field} has rows with no real token (row {int(empty[0])} first, {empty.size:,} in "
            "all); drop those examples or mark at least one token of each as real"
        )
    return torch.from_numpy(real)


def _npz_x(x: np.ndarray, name: str, inp: SpecInput, field: str = "x") -> torch.Tensor:
    """The array ``field`` checked against the spec's input ``name`` and converted to its
    tensor."""
    found = f"{field} is {x.dtype} {tuple(x.shape)}"
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
                fix = f"{field} looks channels-last: store {field}.transpose(0, 3, 1, 2)"
            raise DataError(
                f"{field} has {x.shape[1]} channels (shape {tuple(x.shape)}, read as (N, C, H, W)) but "
                f"the spec's input `{name}` takes {inp.channels}-channel images; {fix}"
            )
        height, width = inp.size
        if x.shape[2:] != (height, width):
            raise DataError(
                f"{field} holds {x.shape[2]}x{x.shape[3]} images but the spec's input `{name}` has size "
                f"{height}x{width} (H x W); resize the images or change the spec's size"
            )
        images = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        _check_finite(images, field)
        return torch.from_numpy(images)
    if isinstance(inp, TokensInput):
        if not np.issubdtype(x.dtype, np.integer) or x.ndim != 2:
            raise DataError(f"{found} but {wanted}")
        check_length(x.shape[1], name, inp)
        check_ids(x, f"token ids in {field}", inp.vocab_size, f"the spec's input `{name}`")
        return torch.from_numpy(x.astype(np.int64))
    if not np.issubdtype(x.dtype, np.floating) or x.ndim != 3 or x.shape[2] != inp.dim:
        raise DataError(f"{found} but {wanted}")
    check_length(x.shape[1], name, inp)
    features = x.astype(np.float32)
    _check_finite(features, field)
    return torch.from_numpy(features)


def _check_finite(x: np.ndarray, field: str) -> None:
    if not np.isfinite(x).all():
        raise DataError(f"{field} holds NaN or infinite values; clean the data before training")


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
