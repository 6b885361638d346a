"""``imagefolder:PATH``: one sub-folder per class, images converted and resized to the spec's."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import torch

from archlab.runners.data.common import TaskData, image_input, read_bytes, source_path
from archlab.runners.data.errors import DataError
from archlab.runners.data.task import Layout


def load_imagefolder(source: str, arg: str, layout: Layout, seed: int) -> TaskData:
    """One sub-folder per class (sorted names = ids), images converted and resized to the spec's.

    Hidden files and folders (names starting with '.') are skipped; images inside a class folder
    may sit in nested folders. Any other file is an error, so no image is silently left out.
    """
    name, inp = image_input(layout, source)
    modes = {1: "L", 3: "RGB"}
    if inp.channels not in modes:
        raise DataError(
            f"imagefolder converts images to grey (L, 1 channel) or RGB (3 channels), but the "
            f"spec's input `{name}` has {inp.channels} channels; use npz:PATH for other channels"
        )
    root = source_path(source, arg, "imagefolder", folder=True)
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
            raw = read_bytes(file)
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
