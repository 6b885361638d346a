"""Data sources of ``arch train``: shapes, dtypes, tasks, content hashes and every fit check."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import archlab
from archlab.errors import UserInputError
from archlab.runners.data import DataError, TaskData, load_data, task_of
from archlab.specs.models import Spec

ROOT = Path(__file__).parents[2]
Doc = dict[str, Any]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def vit(minimal_vit: Callable[[], Doc]) -> Callable[..., Spec]:
    """The mini ViT (1 x 8 x 8 images, 10 classes), with its image input or classes changed."""

    def make(channels: int = 1, size: int = 8, classes: int = 10) -> Spec:
        doc = minimal_vit()
        doc["inputs"]["image"] = {"kind": "image", "channels": channels, "size": size}
        doc["nodes"]["head"]["classes"] = classes
        return archlab.load_spec(doc)

    return make


@pytest.fixture
def gpt(minimal_gpt: Callable[[], Doc]) -> Callable[..., Spec]:
    """The mini GPT (tokens input `ids`, lm_head `logits`), with its input changed."""

    def make(vocab_size: int = 100, max_len: int = 32, pad_id: int | None = None) -> Spec:
        doc = minimal_gpt()
        doc["inputs"]["ids"] = {"kind": "tokens", "vocab_size": vocab_size, "max_len": max_len}
        if pad_id is not None:
            doc["inputs"]["ids"]["pad_id"] = pad_id
        return archlab.load_spec(doc)

    return make


def transformer_doc() -> Doc:
    doc: Doc = json.loads((ROOT / "specs/transformer-tiny.json").read_text(encoding="utf-8"))
    return doc


@pytest.fixture
def seq2seq_spec() -> Spec:
    return archlab.load_spec(ROOT / "specs/transformer-tiny.json")


@pytest.fixture
def token_classifier(minimal_gpt: Callable[[], Doc]) -> Spec:
    """BERT-like: tokens (vocab 100, max_len 32) -> bidirectional encoder -> classify, 3 classes."""
    doc = minimal_gpt()
    doc["nodes"]["dec"]["op"] = "encoder"
    doc["nodes"]["logits"] = {"op": "classify", "input": "norm", "classes": 3, "pool": "mean"}
    return archlab.load_spec(doc)


# ------------------------------------------------------------------------------------- task_of


def test_task_follows_from_the_output(vit, gpt, seq2seq_spec, token_classifier) -> None:
    assert task_of(vit()) == "classify"
    assert task_of(token_classifier) == "classify"
    assert task_of(gpt()) == "lm"
    assert task_of(seq2seq_spec) == "seq2seq"
    assert task_of(archlab.load_spec(ROOT / "specs/t5-small.json")) == "seq2seq"


def test_task_of_refuses_specs_without_a_trainable_head(minimal_vit, minimal_gpt) -> None:
    doc = minimal_vit()
    doc["nodes"]["pooled"] = {"op": "pool", "input": "enc", "mode": "mean"}
    doc["outputs"] = ["head", "pooled"]
    with pytest.raises(DataError, match=r"has 2 outputs \(`head`, `pooled`\); arch train supports"):
        task_of(archlab.load_spec(doc))
    doc = minimal_vit()
    del doc["nodes"]["head"]
    doc["outputs"] = "enc"
    with pytest.raises(DataError, match=r"output `enc` is a `encoder` node; arch train supports"):
        task_of(archlab.load_spec(doc))
    doc = minimal_gpt()
    doc["nodes"]["dec"]["op"] = "encoder"
    with pytest.raises(DataError, match=r"lm_head `logits` sits on a bidirectional encoder"):
        task_of(archlab.load_spec(doc))
    assert issubclass(DataError, UserInputError)


# -------------------------------------------------------------------------------------- digits


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


def test_subset_picks_rows(vit) -> None:
    data = load_data("digits", vit())
    rows = [5, 0, 1796]
    for indices in (rows, np.array(rows), torch.tensor(rows)):
        part = data.subset(indices)
        assert len(part) == 3
        assert torch.equal(part.inputs["image"], data.inputs["image"][rows])
        assert torch.equal(part.targets, data.targets[rows])
        assert (part.content_sha256, part.classes) == (data.content_sha256, data.classes)
    assert len(data.subset([])) == 0
    with pytest.raises(TypeError, match="integer row indices"):
        data.subset(np.ones(len(data), dtype=bool))


def test_task_data_rows_must_agree() -> None:
    with pytest.raises(ValueError, match="rows differ"):
        TaskData(
            "classify", {"x": torch.zeros(3, 2)}, torch.zeros(2, dtype=torch.int64), None, 2,
            None, "test", "0" * 64, "test",
        )  # fmt: skip


# ----------------------------------------------------------------------------------------- npz


def save_npz(path: Path, **arrays: Any) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_images_with_groups(vit, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((20, 3, 8, 8), dtype=np.float32)
    y = np.arange(20) % 4
    groups = np.repeat(np.arange(5), 4)
    source = save_npz(tmp_path / "d.npz", x=x, y=y, groups=groups)
    data = load_data(source, vit(channels=3))
    assert data.task == "classify" and data.source == source
    assert torch.equal(data.inputs["image"], torch.from_numpy(x))
    assert data.targets.dtype == torch.int64 and data.targets.tolist() == y.tolist()
    assert data.groups is not None and (data.groups == groups).all()
    assert data.content_sha256 == sha256(tmp_path / "d.npz")
    part = data.subset([0, 19])
    assert part.groups is not None and part.groups.tolist() == [0, 4]


def test_npz_uint8_images_without_channel_axis(vit, tmp_path: Path) -> None:
    x = np.full((4, 8, 8), 255, dtype=np.uint8)
    x[0] = 0
    data = load_data(save_npz(tmp_path / "d.npz", x=x, y=np.zeros(4, np.int32)), vit())
    images = data.inputs["image"]
    assert images.shape == (4, 1, 8, 8) and images.dtype == torch.float32
    assert images[0].max() == 0.0 and images[1:].min() == 1.0


def test_npz_hash_is_stable_and_follows_the_content(vit, tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    source = save_npz(path, x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64))
    first = load_data(source, vit()).content_sha256
    assert load_data(source, vit()).content_sha256 == first
    save_npz(path, x=np.zeros((4, 1, 8, 8), np.float32), y=np.ones(4, np.int64))
    assert load_data(source, vit()).content_sha256 != first


def test_npz_tokens_for_a_classifier_and_a_language_model(token_classifier, gpt, tmp_path) -> None:
    x = np.arange(60).reshape(6, 10) % 100
    data = load_data(save_npz(tmp_path / "c.npz", x=x, y=np.array([0, 1, 2, 0, 1, 2])), token_classifier)  # fmt: skip
    assert data.task == "classify" and data.inputs["ids"].dtype == torch.int64
    assert data.inputs["ids"].shape == (6, 10) and data.classes == 3
    y = np.roll(x, -1, axis=1)
    y[:, -1] = -100
    data = load_data(save_npz(tmp_path / "lm.npz", x=x, y=y), gpt())
    assert (data.task, data.vocab_size, data.classes) == ("lm", 100, None)
    assert data.targets.tolist() == y.tolist() and data.stratify_labels is None


def test_npz_features(tmp_path: Path) -> None:
    spec = archlab.load_spec(ROOT / "specs/block-local-encoder.json")  # features (T, 256)
    x = np.ones((3, 5, 256), np.float64)
    data = load_data(save_npz(tmp_path / "f.npz", x=x, y=np.array([0, 1, 0])), spec)
    assert data.inputs["feats"].shape == (3, 5, 256) and data.inputs["feats"].dtype == torch.float32
    with pytest.raises(DataError, match=r"x is float64 \(3, 5, 64\) but the spec's input `feats` takes float features \(N, T, 256\)"):  # fmt: skip
        load_data(save_npz(tmp_path / "g.npz", x=x[..., :64], y=np.array([0, 1, 0])), spec)


IMAGES = np.zeros((4, 1, 8, 8), np.float32)
LABELS = np.arange(4)


@pytest.mark.parametrize(
    ("arrays", "pattern"),
    [
        ({"x": IMAGES}, r"has no y \(it holds \['x'\]\); the arrays are x, y and optionally groups"),
        ({"x": IMAGES, "y": LABELS, "group": LABELS}, r"unexpected arrays \(it holds \['group', 'x', 'y'\]\)"),
        ({"x": IMAGES, "y": LABELS[:3]}, r"x has 4 examples but y has 3"),
        ({"x": IMAGES, "y": LABELS, "groups": LABELS[:2]}, r"x has 4 examples but groups has 2"),
        ({"x": IMAGES[:0], "y": LABELS[:0]}, r"holds no examples"),
        ({"x": np.zeros((4, 3, 8, 8)), "y": LABELS}, r"x has 3 channels \(shape \(4, 3, 8, 8\), read as \(N, C, H, W\)\) but the spec's input `image` takes 1-channel images; convert"),
        ({"x": np.zeros((4, 8, 8, 1)), "y": LABELS}, r"x has 8 channels .* takes 1-channel images; x looks channels-last"),
        ({"x": np.zeros((4, 1, 16, 16)), "y": LABELS}, r"x holds 16x16 images but the spec's input `image` has size 8x8"),
        ({"x": IMAGES, "y": np.array([0, 11, 3, 2])}, r"the data has labels 0\.\.11 but the spec's head `head` has 10 classes"),
        ({"x": IMAGES, "y": np.array([0, -1, 3, 2])}, r"the data has labels -1\.\.3 but the spec's head `head` has 10 classes"),
        ({"x": IMAGES, "y": LABELS.astype(np.float32)}, r"y is float32 \(4,\) but .* y must be integer class ids"),
        ({"x": np.zeros((4, 8), np.int64), "y": LABELS}, r"x is int64 \(4, 8\) but the spec's input `image` takes float or uint8 images \(N, 1, 8, 8\)"),
        ({"x": np.full((4, 1, 8, 8), np.nan), "y": LABELS}, r"NaN"),
    ],
)  # fmt: skip
def test_npz_fit_checks_for_images(vit, tmp_path: Path, arrays: Doc, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        load_data(save_npz(tmp_path / "d.npz", **arrays), vit())


TOKENS = np.ones((4, 10), np.int64)


@pytest.mark.parametrize(
    ("arrays", "pattern"),
    [
        ({"x": np.zeros((4, 1, 8, 8), np.float32), "y": TOKENS}, r"x is float32 \(4, 1, 8, 8\) but the spec's input `ids` takes integer token ids \(N, T\)"),
        ({"x": TOKENS * 300, "y": TOKENS}, r"token ids in x are 300\.\.300 but the spec's input `ids` has vocab_size 100"),
        ({"x": np.ones((4, 40), np.int64), "y": np.ones((4, 40), np.int64)}, r"sequences of length 40 but the spec's input `ids` has max_len 32"),
        ({"x": TOKENS, "y": TOKENS * 100}, r"target ids in y are 100\.\.100 but the spec's lm_head `logits` has vocab_size 100"),
        ({"x": TOKENS, "y": TOKENS[:, :5]}, r"y is int64 \(4, 5\) but .* shaped like x \(4, 10\)"),
    ],
)  # fmt: skip
def test_npz_fit_checks_for_tokens(gpt, tmp_path: Path, arrays: Doc, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        load_data(save_npz(tmp_path / "d.npz", **arrays), gpt())


def test_npz_file_problems(vit, seq2seq_spec, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"npz:.*missing\.npz: no such file"):
        load_data(f"npz:{tmp_path / 'missing.npz'}", vit())
    with pytest.raises(DataError, match=r"is a folder; npz: reads a file"):
        load_data(f"npz:{tmp_path}", vit())
    (tmp_path / "bad.npz").write_text("not an archive")
    with pytest.raises(DataError, match=r"bad\.npz is not a readable \.npz archive"):
        load_data(f"npz:{tmp_path / 'bad.npz'}", vit())
    np.save(tmp_path / "one.npy", IMAGES)
    with pytest.raises(DataError, match=r"holds a single array \(\.npy\)"):
        load_data(f"npz:{tmp_path / 'one.npy'}", vit())
    with pytest.raises(DataError, match=r"npz data are x/y arrays .* but .* is an encoder-decoder .*; use seq2seq:copy"):  # fmt: skip
        load_data(save_npz(tmp_path / "d.npz", x=TOKENS, y=TOKENS), seq2seq_spec)


def test_npz_that_is_empty_not_an_archive_or_pickled_is_refused_clearly(
    vit, tmp_path: Path
) -> None:
    """A 0-byte file, a text file and object arrays: a DataError saying what is wrong, never a
    raw EOFError, and never the advice to unpickle; ``arch train`` exits 2 on each."""
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.npz is empty \(0 bytes\)"):
        load_data(f"npz:{tmp_path / 'empty.npz'}", vit())
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    with pytest.raises(DataError, match=r"not a readable \.npz archive") as text:
        load_data(f"npz:{tmp_path / 'text.npz'}", vit())
    assert "pickle" not in str(text.value)
    (tmp_path / "zip.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=r"zip\.npz is not a readable \.npz archive"):
        load_data(f"npz:{tmp_path / 'zip.npz'}", vit())
    objects = np.array([{"a": 1}, 2, 3], dtype=object)
    np.savez(tmp_path / "objects.npz", x=objects, y=np.arange(3))
    with pytest.raises(DataError, match=r"objects\.npz holds object arrays .* never loads"):
        load_data(f"npz:{tmp_path / 'objects.npz'}", vit())
    from click.testing import CliRunner

    from archlab.cli.main import cli

    url = f"sqlite:///{tmp_path / 'r.db'}"
    spec = tmp_path / "vit.json"
    spec.write_text(json.dumps(vit().model_dump(mode="json", by_alias=True, exclude_unset=True)))
    for name in ("empty", "text", "objects"):
        result = CliRunner().invoke(
            cli, ["train", str(spec), "--data", f"npz:{tmp_path / name}.npz", "--registry", url]
        )
        assert result.exit_code == 2 and f"{name}.npz" in result.output, result.output
        assert "Traceback" not in result.output


# --------------------------------------------------------------------------------- imagefolder


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


# ---------------------------------------------------------------------------------------- text


def test_text_byte_level_windows(gpt, tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    raw = "héllo wörld, the quick brown fox\n".encode()
    path.write_bytes(raw)
    data = load_data(f"text:{path}", gpt(vocab_size=256, max_len=8))
    T = 8
    windows = (len(raw) - 1) // T
    x, y = data.inputs["ids"], data.targets
    assert (data.task, data.vocab_size) == ("lm", 256)
    assert x.shape == y.shape == (windows, T) and x.dtype == y.dtype == torch.int64
    for i in range(windows):
        assert x[i].tolist() == list(raw[i * T : (i + 1) * T])
        assert y[i].tolist() == list(raw[i * T + 1 : (i + 1) * T + 1])
    assert data.content_sha256 == sha256(path)
    assert "byte-level" in data.description
    path.write_bytes(raw.replace(b"fox", b"cat"))
    changed = load_data(f"text:{path}", gpt(vocab_size=256, max_len=8))
    assert changed.content_sha256 == sha256(path) != data.content_sha256
    assert changed.inputs["ids"].shape == x.shape


def test_text_char_level_keeps_the_pad_id_free(gpt, tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("abcab cab", encoding="utf-8")
    data = load_data(f"text:{path}", gpt(vocab_size=5, max_len=4, pad_id=0))
    ids = {" ": 1, "a": 2, "b": 3, "c": 4}  # sorted characters, numbered around pad id 0
    assert data.inputs["ids"].tolist() == [[ids[c] for c in "abca"], [ids[c] for c in "b ca"]]
    assert data.targets.tolist() == [[ids[c] for c in "bcab"], [ids[c] for c in " cab"]]
    assert "char-level, 4 characters" in data.description


def test_text_fit_checks(gpt, vit, tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("short", encoding="utf-8")
    with pytest.raises(DataError, match=r"has 5 tokens \(byte-level\) but one window of the spec's input `ids` \(max_len 8\) needs 9"):  # fmt: skip
        load_data(f"text:{path}", gpt(vocab_size=256, max_len=8))
    path.write_text("abcdefghijklmnopqrstuvwxyz", encoding="utf-8")
    with pytest.raises(DataError, match=r"has 26 distinct characters, needing 26 ids, but the spec's input `ids` has vocab_size 20"):  # fmt: skip
        load_data(f"text:{path}", gpt(vocab_size=20, max_len=4))
    path.write_bytes(b"abc\xff\xfe" * 4)
    with pytest.raises(DataError, match=r"is not UTF-8 text \(byte 3\)"):
        load_data(f"text:{path}", gpt(vocab_size=100, max_len=4))
    path.write_bytes(b"abc\0" * 4)
    with pytest.raises(DataError, match=r"holds byte 0 \(at offset 3\), the pad_id of the spec's input `ids`"):  # fmt: skip
        load_data(f"text:{path}", gpt(vocab_size=256, max_len=4, pad_id=0))
    with pytest.raises(DataError, match=r"text data are next-token windows .* but .* is a classifier .*; use digits, npz:PATH or imagefolder:PATH"):  # fmt: skip
        load_data(f"text:{path}", vit())
    with pytest.raises(DataError, match=r"no such file"):
        load_data(f"text:{tmp_path / 'nowhere.txt'}", gpt())


# ------------------------------------------------------------------------------------- seq2seq


@pytest.mark.parametrize("task", ["copy", "reverse", "sort"])
def test_seq2seq_tasks(seq2seq_spec, task: str) -> None:
    data = load_data(f"seq2seq:{task}", seq2seq_spec, seed=3)
    src, dec, target = data.inputs["src"], data.inputs["tgt"], data.targets
    assert (data.task, len(data), data.vocab_size, data.classes) == ("seq2seq", 5000, 16, None)
    assert src.shape == dec.shape == target.shape == (5000, 10)
    assert src.dtype == dec.dtype == target.dtype == torch.int64
    assert src.min() == 3 and src.max() == 12  # ids 0..2 reserved; 10 symbols
    expected = {"copy": src, "reverse": src.flip(1), "sort": src.sort(dim=1).values}[task]
    assert torch.equal(target, expected)
    assert (dec[:, 0] == 1).all() and torch.equal(dec[:, 1:], target[:, :-1])


def test_seq2seq_is_reproducible_per_seed(seq2seq_spec) -> None:
    a = load_data("seq2seq:reverse", seq2seq_spec, seed=1)
    b = load_data("seq2seq:reverse", seq2seq_spec, seed=1)
    c = load_data("seq2seq:reverse", seq2seq_spec, seed=2)
    assert torch.equal(a.inputs["src"], b.inputs["src"]) and a.content_sha256 == b.content_sha256
    assert (
        not torch.equal(a.inputs["src"], c.inputs["src"]) and a.content_sha256 != c.content_sha256
    )
    other = load_data("seq2seq:copy", seq2seq_spec, seed=1)
    assert torch.equal(other.inputs["src"], a.inputs["src"])
    assert other.content_sha256 != a.content_sha256


def test_seq2seq_options(seq2seq_spec) -> None:
    data = load_data("seq2seq:sort?n=7&len=16&symbols=2", seq2seq_spec)
    assert data.inputs["src"].shape == (7, 16) and set(data.inputs["src"].unique().tolist()) <= {
        3,
        4,
    }
    for source, pattern in [
        ("seq2seq:shuffle", r"unknown seq2seq task 'shuffle'.*seq2seq:copy, seq2seq:reverse, seq2seq:sort"),
        ("seq2seq:copy?size=3", r"unknown option 'size'; the options are n, len, symbols"),
        ("seq2seq:copy?n=3&n=4", r"repeats 'n'"),
        ("seq2seq:copy?len=17", r"len='17' must be an integer from 1 to 16 \(the maximum\)"),
        ("seq2seq:copy?symbols=14", r"symbols='14' must be an integer from 1 to 13"),
        ("seq2seq:copy?n=-1", r"n='-1' must be an integer from 1 to 1,000,000"),
        # no size is unbounded: a huge n is refused with the maximum, not allocated
        ("seq2seq:copy?n=1000000000000", r"n='1000000000000' must be an integer from 1 to 1,000,000 \(the maximum\)"),
        ("seq2seq:copy?n=1000001", r"n='1000001' must be an integer from 1 to 1,000,000"),
        ("seq2seq:copy?len=" + "9" * 5000, r"len='9{40}' must be an integer from 1 to 16"),
    ]:  # fmt: skip
        with pytest.raises(DataError, match=pattern):
            load_data(source, seq2seq_spec)


def test_seq2seq_fit_checks(gpt) -> None:
    with pytest.raises(DataError, match=r"seq2seq:copy is encoder-decoder data .* but .* is a decoder-only language model .*; use text:PATH or npz:PATH"):  # fmt: skip
        load_data("seq2seq:copy", gpt())
    doc = transformer_doc()
    doc["inputs"]["src"]["pad_id"] = 3
    with pytest.raises(DataError, match=r"reserve id 0 for padding.* the spec's input `src` has pad_id 3"):  # fmt: skip
        load_data("seq2seq:copy", archlab.load_spec(doc))
    doc = transformer_doc()
    for name in ("src", "tgt"):
        doc["inputs"][name]["vocab_size"] = 4
    with pytest.raises(DataError, match=r"at least 2 symbols .* but the spec's vocabulary is 4"):
        load_data("seq2seq:copy", archlab.load_spec(doc))


# ------------------------------------------------------------------------------------- sources


def test_unknown_source_kinds_list_the_kinds(vit) -> None:
    kinds = (
        r"the kinds are: digits, npz:PATH, imagefolder:PATH, text:PATH, seq2seq:copy\|reverse\|sort"
    )
    with pytest.raises(DataError, match=rf"unknown data source 'mnist'; {kinds}$"):
        load_data("mnist", vit())
    with pytest.raises(DataError, match=r"for an npz file write npz:train\.npz"):
        load_data("train.npz", vit())
    with pytest.raises(DataError, match=r"'npz:' names no path; write npz:PATH"):
        load_data("npz:", vit())
