"""The ``imagefolder:PATH`` source: conversion, resizing, content hashes and fit checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from archlab.runners.data import DataError, load_data


def make_folder(root: Path, colours: dict[str, list[tuple[str, tuple[int, ...]]]]) -> str:
    """One sub-folder per class, each image a uniform colour (mode from the colour's length)."""
    for cls, images in colours.items():
        (root / cls).mkdir(parents=True)
        for i, (mode, colour) in enumerate(images):
            Image.new(mode, (12 + i, 10), colour).save(root / cls / f"{i}.png")
    return f"imagefolder:{root}"


def test_imagefolder_converts_and_resizes(vit, tmp_path: Path) -> None:
    source = make_folder(
        tmp_path / "d",
        {"cat": [("RGB", (255, 0, 128)), ("L", (255,))], "dog": [("RGBA", (0, 255, 0, 10))]},
    )
    (tmp_path / "d" / ".DS_Store").write_bytes(b"\0junk")
    (tmp_path / "d" / "cat" / ".hidden.png").write_bytes(b"junk")
    data = load_data(source, vit(channels=3))
    x = data.inputs["image"]
    assert x.shape == (3, 3, 8, 8) and x.dtype == torch.float32
    assert data.targets.tolist() == [0, 0, 1] and data.classes == 10
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([1.0, 0.0, 128 / 255]))
    assert (x[1] == 1.0).all() and (x[0] == x[0, :, :1, :1]).all()
    torch.testing.assert_close(x[2, :, 3, 3], torch.tensor([0.0, 1.0, 0.0]))
    assert "3 images in 2 classes (cat, dog), as 8x8 RGB" in data.description
    grey = load_data(source, vit(channels=1)).inputs["image"]
    assert grey.shape == (3, 1, 8, 8)
    assert abs(grey[0, 0, 0, 0].item() - (0.299 * 255 + 0.114 * 128) / 255) < 0.01


def test_imagefolder_hash(vit, tmp_path: Path) -> None:
    source = make_folder(tmp_path / "d", {"a": [("L", (0,))], "b": [("L", (9,))]})
    first = load_data(source, vit()).content_sha256
    assert load_data(source, vit()).content_sha256 == first
    Image.new("L", (12, 10), 10).save(tmp_path / "d" / "b" / "0.png")
    second = load_data(source, vit()).content_sha256
    assert second != first
    (tmp_path / "d" / "b" / "0.png").rename(tmp_path / "d" / "b" / "renamed.png")
    assert load_data(source, vit()).content_sha256 not in (first, second)


def test_imagefolder_fit_checks(vit, tmp_path: Path) -> None:
    twelve = make_folder(tmp_path / "many", {f"c{i:02d}": [("L", (i,))] for i in range(12)})
    with pytest.raises(DataError, match=r"the data has labels 0\.\.11 \(12 class folders\) but the spec's head `head` has 10 classes"):  # fmt: skip
        load_data(twelve, vit())
    with pytest.raises(DataError, match=r"grey \(L, 1 channel\) or RGB \(3 channels\), but the spec's input `image` has 2 channels"):  # fmt: skip
        load_data(twelve, vit(channels=2))
    source = make_folder(tmp_path / "d", {"a": [("L", (0,))]})
    (tmp_path / "d" / "a" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"'.*notes\.txt' is not an image Pillow can read"):
        load_data(source, vit())
    (tmp_path / "d" / "a" / "notes.txt").unlink()
    (tmp_path / "d" / "b").mkdir()
    with pytest.raises(DataError, match=r"the class folder 'b' holds no images"):
        load_data(source, vit())
    (tmp_path / "d" / "b").rmdir()
    (tmp_path / "d" / "labels.csv").write_text("a,0")
    with pytest.raises(DataError, match=r"found the file 'labels\.csv' beside the class folders"):
        load_data(source, vit())
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no class sub-folders"):
        load_data(f"imagefolder:{tmp_path / 'empty'}", vit())
    with pytest.raises(DataError, match=r"no such folder"):
        load_data(f"imagefolder:{tmp_path / 'nowhere'}", vit())


def test_imagefolder_needs_an_image_classifier(gpt, token_classifier, tmp_path: Path) -> None:
    source = make_folder(tmp_path / "d", {"a": [("L", (0,))]})
    with pytest.raises(DataError, match=r"is image classification data, but .* is a decoder-only language model"):  # fmt: skip
        load_data(source, gpt())
    with pytest.raises(DataError, match=r"holds images, but the spec's input `ids` is of kind tokens, not image"):  # fmt: skip
        load_data(source, token_classifier)
