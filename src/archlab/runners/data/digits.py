"""``digits``: scikit-learn's 1,797 8x8 grey digit images (bundled, no network), 10 classes."""

from __future__ import annotations

import numpy as np
import torch

from archlab.runners.data.common import TaskData, check_labels, hash_arrays, image_input
from archlab.runners.data.errors import DataError
from archlab.runners.data.task import Layout


def load_digits(source: str, layout: Layout) -> TaskData:
    """scikit-learn's digits: float32 (1797, 1, 8, 8) in [0, 1] (pixel values 0..16 / 16)."""
    name, inp = image_input(layout, "digits")
    size = tuple(inp.size)
    if inp.channels != 1 or size != (8, 8):
        raise DataError(
            f"digits are 1-channel 8x8 images, but the spec's input `{name}` takes "
            f"{inp.channels}-channel {size[0]}x{size[1]} images; set "
            '"channels": 1, "size": 8 (as in specs/vit-tiny-digits.json)'
        )
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images, labels = np.asarray(bunch.images), np.asarray(bunch.target)
    check_labels(labels, layout)
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
        content_sha256=hash_arrays(images.astype(np.float64), labels.astype(np.int64)),
        description=f"digits: {n:,} 8x8 grey images, {k} classes",
    )
