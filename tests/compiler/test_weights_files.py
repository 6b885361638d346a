"""Weights files (``CompiledModel.save`` / ``load_compiled``) from a hostile or careless source:
the embedded spec is JSON text, never a path; the tensors are checked against the spec's module
(names, shapes, dtypes, from the header alone) before anything is built; saved files get the
umask's permissions."""

from __future__ import annotations

import json
import os
import resource
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import archlab
from archlab.cli.main import cli
from archlab.compiler.errors import CompileError
from archlab.compiler.model import read_safetensors_header
from archlab.errors import UserInputError

ROOT = Path(__file__).parents[2]


def tiny(**changes: Any) -> dict[str, Any]:
    """A two-block GPT with tied embeddings (50 x 32)."""
    doc: dict[str, Any] = {
        "version": 1,
        "name": "tiny-gpt",
        "inputs": {"ids": {"kind": "tokens", "vocab_size": 50, "max_len": 32, "pad_id": 0}},
        "nodes": {
            "tok": {"op": "embed", "input": "ids", "dim": 32},
            "dec": {"op": "decoder", "input": "tok", "depth": 2,
                    "block": {"attention": {"heads": 4, "position": "rotary"}}},
            "out": {"op": "norm", "input": "dec"},
            "logits": {"op": "lm_head", "input": "out", "tie": "tok"},
        },
        "outputs": "logits",
    }  # fmt: skip
    doc["nodes"]["tok"].update(changes)
    return doc


def metadata_of(path: Path) -> dict[str, str]:
    return read_safetensors_header(path)[1]


def rewrite_header(path: Path, change: Any) -> None:
    """Edit a safetensors file's JSON header in place (its tensor bytes stay as they are)."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    change(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length :])


@pytest.fixture
def saved(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "tiny.safetensors"
    archlab.compile_spec(tiny(), seed=0).save(path)
    yield path


@pytest.mark.parametrize("where", ["/etc/passwd", "a spec file on disk", "  ../spec.json"])
def test_an_embedded_spec_is_json_text_never_a_path(
    saved: Path, tmp_path: Path, where: str
) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(tiny()))
    text = str(spec_file) if where == "a spec file on disk" else where
    meta = {**metadata_of(saved), "archlab.spec": text}
    crafted = tmp_path / "crafted.safetensors"
    save_file({"w": torch.zeros(2)}, crafted, metadata=meta)
    with pytest.raises(CompileError, match=r"is not a JSON object .* never a path"):
        archlab.load_compiled(crafted)


def test_float_tensors_relabelled_int32_are_refused(saved: Path) -> None:
    """Same bytes, other dtype: they used to load as garbage floats (NaN metrics in eval)."""

    def relabel(header: dict[str, Any]) -> None:
        for name, entry in header.items():
            if name != "__metadata__" and entry["dtype"] == "F32":
                entry["dtype"] = "I32"

    rewrite_header(saved, relabel)
    with pytest.raises(CompileError, match=r"tensor 'dec\.layers\.0\.attention\.out\.bias' is \[32\] int32, the spec's module has \[32\] float32; .* and 22 more"):  # fmt: skip
        archlab.load_compiled(saved)


def test_a_tensor_of_the_wrong_shape_missing_or_extra_names_the_tensor(
    saved: Path, tmp_path: Path
) -> None:
    model = archlab.compile_spec(tiny(), seed=0)
    state = {k: v for k, v in model.state_dict().items() if k != "logits.weight"}  # tied
    meta = metadata_of(saved)
    wrong = tmp_path / "wrong.safetensors"
    save_file({**state, "tok.weight": torch.zeros(50, 31)}, wrong, metadata=meta)
    with pytest.raises(
        CompileError, match=r"tensor 'tok\.weight' is \[50, 31\] float32, the spec's module has \[50, 32\] float32"
    ):  # fmt: skip
        archlab.load_compiled(wrong)
    missing = tmp_path / "missing.safetensors"
    save_file({k: v for k, v in state.items() if k != "out.weight"}, missing, metadata=meta)
    with pytest.raises(CompileError, match=r"missing 1 tensor\(s\): out\.weight"):
        archlab.load_compiled(missing)
    extra = tmp_path / "extra.safetensors"
    save_file({**state, "spare": torch.zeros(1)}, extra, metadata=meta)
    with pytest.raises(CompileError, match=r"1 unexpected tensor\(s\): spare"):
        archlab.load_compiled(extra)
    either = tmp_path / "either.safetensors"  # a tied weight may be stored under either name
    tied = {("logits.weight" if k == "tok.weight" else k): v for k, v in state.items()}
    save_file(tied, either, metadata=meta)
    loaded = archlab.load_compiled(either)
    assert torch.equal(loaded.tok.weight, model.tok.weight)
    assert loaded.logits.weight is loaded.tok.weight


def test_a_small_file_with_a_huge_spec_is_refused_before_anything_is_allocated(
    saved: Path, tmp_path: Path
) -> None:
    """A spec of 1 TB of weights (vocab 2^20 x dim 2^18) in a file of a few KB."""
    huge = tiny(dim=2**18)
    huge["inputs"]["ids"]["vocab_size"] = 2**20
    huge["nodes"]["dec"]["depth"] = 1
    meta = {**metadata_of(saved), "archlab.spec": json.dumps(huge)}
    crafted = tmp_path / "huge.safetensors"
    save_file({"tok.weight": torch.zeros(50, 32)}, crafted, metadata=meta)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    with pytest.raises(UserInputError, match=r"do not fit the spec|memory"):
        archlab.load_compiled(crafted)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1 << 20  # < 1 GiB


def test_a_header_larger_than_the_format_allows_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big-header.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(CompileError, match=r"declares a header of 1,099,511,627,776 bytes"):  # fmt: skip
        archlab.load_compiled(path)
    with pytest.raises(CompileError, match="is not a regular file"):
        archlab.load_compiled("/dev/zero")


@pytest.mark.slow  # (~15 s: a 100 MB spec is loaded and canonicalised)
def test_a_spec_too_large_for_a_safetensors_header_is_refused_on_save(tmp_path: Path) -> None:
    doc = tiny()
    doc["name"] = "x" * 100_000_001
    model = archlab.compile_spec(doc)
    with pytest.raises(CompileError, match=r"too large to embed in a safetensors header") as exc:
        model.save(tmp_path / "big.safetensors")
    assert len(str(exc.value)) < 400 and not (tmp_path / "big.safetensors").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


@pytest.fixture
def umask_027() -> Iterator[None]:
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_saved_weights_get_the_umasks_permissions(tmp_path: Path, umask_027: None) -> None:
    path = tmp_path / "tiny.safetensors"
    archlab.compile_spec(tiny()).save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # not safetensors' own 0600
    cli_path = tmp_path / "vit.safetensors"
    spec = str(ROOT / "specs" / "vit-tiny-digits.json")
    result = CliRunner().invoke(cli, ["compile", spec, "-o", str(cli_path), "--no-forward"])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(cli_path.stat().st_mode) == 0o640
    assert archlab.load_compiled(cli_path).spec.name == "vit-tiny-digits"


def test_saving_into_a_fifo_writes_the_file_through_it(tmp_path: Path) -> None:
    import threading

    os.mkfifo(tmp_path / "pipe")
    received: list[bytes] = []
    reader = threading.Thread(
        target=lambda: received.append((tmp_path / "pipe").read_bytes()), daemon=True
    )
    reader.start()
    model = archlab.compile_spec(tiny(), seed=0)
    model.save(tmp_path / "pipe")
    reader.join(timeout=30)
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe").st_mode)
    (tmp_path / "copy.safetensors").write_bytes(received[0])
    loaded = archlab.load_compiled(tmp_path / "copy.safetensors")
    assert torch.equal(loaded.tok.weight, model.tok.weight)
