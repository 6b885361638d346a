"""The ``npz:PATH`` source: images, tokens and features, content hashes, every fit check and
every malformed archive."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import archlab
from archlab.runners.data import DataError, load_data

ROOT = Path(__file__).parents[3]
Doc = dict[str, Any]


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


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def segments(n: int = 6, t: int = 10) -> dict[str, np.ndarray]:
    """Ids, segment ids and a right-padded mask for the two-input classifier."""
    ids = np.arange(n * t).reshape(n, t) % 100
    types = np.zeros_like(ids)
    types[:, t // 2 :] = 1
    mask = np.ones_like(ids, dtype=bool)
    mask[1, 7:] = False
    return {"x": ids, "token_types": types, "ids_mask": mask, "y": np.arange(n) % 3}


def test_npz_feeds_each_input_a_head_reads_and_their_masks(two_input_classifier, tmp_path) -> None:
    arrays = segments()
    data = load_data(save_npz(tmp_path / "s.npz", **arrays), two_input_classifier)
    assert set(data.inputs) == {"ids", "token_types", "ids_mask"}
    assert data.inputs["token_types"].dtype == torch.int64
    assert data.inputs["token_types"].tolist() == arrays["token_types"].tolist()
    assert data.inputs["ids_mask"].dtype == torch.bool and not data.inputs["ids_mask"][1, 7:].any()
    assert "token_types int64 (6, 10)" in data.description
    assert data.subset([1]).inputs["ids_mask"].shape == (1, 10)
    arrays["ids_mask"] = arrays["ids_mask"].astype(np.int8)  # 0/1 integers read as bools too
    masked = load_data(save_npz(tmp_path / "i.npz", **arrays), two_input_classifier)
    assert torch.equal(masked.inputs["ids_mask"], data.inputs["ids_mask"])
    model = archlab.compile_spec(two_input_classifier).eval()
    with torch.no_grad():
        assert model(**data.inputs).shape == (6, 3)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (
            {"token_types": None},
            r"has no array for the spec's input `token_types`: x feeds `ids`.*token_types=np\.zeros_like\(ids\)",
        ),
        (
            {"token_types": np.full((6, 10), 2)},
            r"token ids in token_types are 2\.\.2 but the spec's input `token_types` has vocab_size 2",
        ),
        ({"token_types": np.zeros((5, 10), np.int64)}, r"x has 6 examples but token_types has 5"),
        (
            {"ids_mask": np.ones((6, 9), bool)},
            r"ids_mask is bool \(6, 9\) but it must be bools or 0/1 shaped like the input `ids`'s tokens \(6, 10\)",
        ),
        (
            {"ids_mask": np.full((6, 10), 2)},
            r"ids_mask is int64 \(6, 10\) but it must be bools or 0/1",
        ),
        (
            {"ids_mask": np.zeros((6, 10), bool)},
            r"ids_mask has rows with no real token \(row 0 first, 6 in all\)",
        ),
        (
            {"types_mask": np.ones((6, 10), bool)},
            r"unexpected arrays .*optionally groups, token_types, ids_mask, token_types_mask",
        ),
    ],
)
def test_npz_refuses_further_inputs_and_masks_that_do_not_fit(
    two_input_classifier, tmp_path: Path, change: dict[str, Any], pattern: str
) -> None:
    arrays = {k: v for k, v in (segments() | change).items() if v is not None}
    with pytest.raises(DataError, match=pattern):
        load_data(save_npz(tmp_path / "bad.npz", **arrays), two_input_classifier)


def test_single_input_sources_name_the_npz_way_for_several_inputs(two_input_classifier) -> None:
    from archlab.runners.data.task import spec_layout

    with pytest.raises(DataError, match=r"reads 2 inputs \(`ids`, `token_types`\) but digits feeds one; use npz:PATH with x for `ids` and an array named after each further input \(`token_types`\)"):  # fmt: skip
        spec_layout(two_input_classifier).single_input("digits")


def test_npz_refuses_a_spec_input_named_like_its_reserved_arrays(minimal_gpt, tmp_path) -> None:
    doc = minimal_gpt()
    doc["inputs"]["y"] = {"kind": "tokens", "vocab_size": 2, "max_len": 32}
    doc["nodes"]["types"] = {"op": "embed", "input": "y", "dim": 64}
    doc["nodes"]["summed"] = {"op": "add", "inputs": ["tok", "types"]}
    doc["nodes"]["dec"] |= {"op": "encoder", "input": "summed"}
    doc["nodes"]["logits"] = {"op": "classify", "input": "norm", "classes": 3}
    with pytest.raises(DataError, match=r"has an input named 'y', which npz data reserve"):
        load_data(save_npz(tmp_path / "d.npz", **segments()), archlab.load_spec(doc))
