"""The ``digits`` source and its fit checks."""

from __future__ import annotations

import pytest
import torch

from archlab.runners.data import DataError, load_data


def test_digits(vit) -> None:
    data = load_data("digits", vit())
    assert (data.task, len(data), data.classes, data.vocab_size) == ("classify", 1797, 10, None)
    x = data.inputs["image"]
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert data.targets.shape == (1797,) and data.targets.dtype == torch.int64
    assert set(data.targets.tolist()) == set(range(10))
    assert data.groups is None
    assert data.description == "digits: 1,797 8x8 grey images, 10 classes"
    labels = data.stratify_labels
    assert labels is not None and (labels == data.targets.numpy()).all()
    assert load_data("digits", vit()).content_sha256 == data.content_sha256


def test_digits_fit_checks(vit, gpt) -> None:
    with pytest.raises(DataError, match=r"1-channel 8x8 .* `image` takes 3-channel 8x8"):
        load_data("digits", vit(channels=3))
    with pytest.raises(DataError, match=r"1-channel 8x8 .* `image` takes 1-channel 16x16"):
        load_data("digits", vit(size=16))
    with pytest.raises(DataError, match=r"the data has labels 0\.\.9 but the spec's head `head` has 5 classes"):  # fmt: skip
        load_data("digits", vit(classes=5))
    with pytest.raises(DataError, match=r"digits is image classification data, but .* is a decoder-only language model .*; use text:PATH or npz:PATH"):  # fmt: skip
        load_data("digits", gpt())
