"""``arch import``: weights with the spec embedded, the check against transformers, exit 2 and
nothing written for a bad checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import archlab
from archlab.cli import cli
from archlab.interop.verify import generated_inputs

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

Save = Callable[..., tuple[Any, Path]]


def test_round_trip_through_load_compiled(save_gpt2: Save, tmp_path: Path) -> None:
    source, folder = save_gpt2(tie_word_embeddings=False)
    out, spec_out = tmp_path / "gpt2.safetensors", tmp_path / "gpt2.json"
    result = CliRunner().invoke(
        cli, ["import", str(folder), "-o", str(out), "--spec-out", str(spec_out)]
    )
    assert result.exit_code == 0, result.output
    assert "params " in result.output and "saved weights and spec to" in result.output
    assert "verified against transformers GPT2LMHeadModel: largest output difference" in (
        result.output
    )
    imported = archlab.import_pretrained(folder)
    loaded = archlab.load_compiled(out).eval()
    assert loaded.spec_hash == imported.spec_hash == archlab.spec_hash(spec_out)
    inputs = generated_inputs(loaded)
    with torch.inference_mode():
        assert torch.equal(loaded(**inputs), imported(**inputs))
        logits = source(input_ids=inputs["ids"], attention_mask=inputs["ids_mask"].long()).logits
    mask = inputs["ids_mask"]
    assert (loaded(**inputs) - logits)[mask].abs().max() <= 1e-5 * logits[mask].abs().max()


def test_no_verify_and_dtype(save_gpt2: Save, tmp_path: Path) -> None:
    _source, folder = save_gpt2()
    out = tmp_path / "w.safetensors"
    result = CliRunner().invoke(
        cli, ["import", str(folder), "-o", str(out), "--dtype", "bfloat16", "--no-verify"]
    )
    assert result.exit_code == 0, result.output
    assert "verified" not in result.output
    assert next(archlab.load_compiled(out).parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"model_type": "bloom"}, "model_type 'bloom' is not supported; archlab imports"),
        ({"n_embd": 48}, "has shape [61, 36], the config needs [61, 48]"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    save_gpt2: Save, tmp_path: Path, edit: dict[str, Any], message: str
) -> None:
    _source, folder = save_gpt2()
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **edit}))
    out, spec_out = tmp_path / "w.safetensors", tmp_path / "w.json"
    result = CliRunner().invoke(
        cli, ["import", str(folder), "-o", str(out), "--spec-out", str(spec_out)]
    )
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists() and not spec_out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".w")) == []


def test_a_pickle_exits_2_in_a_real_process(save_gpt2: Save, tmp_path: Path) -> None:
    _source, folder = save_gpt2()
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(
        b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94."
    )
    out = tmp_path / "w.safetensors"
    done = subprocess.run(
        [sys.executable, "-m", "archlab", "import", str(folder), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "holds more than tensors, which archlab never unpickles" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()


@pytest.mark.parametrize(("nudge", "code"), [(0.5, 1), (1e-5, 0)])
def test_a_difference_beyond_the_tolerance_exits_1_and_writes_nothing(
    save_gpt2: Save, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nudge: float, code: int
) -> None:
    """A conversion that gets one tensor wrong is caught by the check against transformers
    (exit 1, a failure while running, not bad input); a difference within the tolerance is
    not."""
    import archlab.interop.convert as convert_module

    convert = convert_module.convert

    def wrong(config: dict[str, Any], state: dict[str, Any]) -> tuple[Any, Any]:
        document, tensors = convert(config, state)
        weight = tensors["decoder.layers.1.mlp.fc1.weight"].clone()
        weight[3, 5] += nudge  # one number (a shift of the whole row would vanish in LayerNorm)
        tensors["decoder.layers.1.mlp.fc1.weight"] = weight
        return document, tensors

    monkeypatch.setattr(convert_module, "convert", wrong)
    _, folder = save_gpt2()
    out, spec_out = tmp_path / "gpt2.safetensors", tmp_path / "gpt2.json"
    result = CliRunner().invoke(
        cli, ["import", str(folder), "-o", str(out), "--spec-out", str(spec_out)]
    )
    assert result.exit_code == code, result.output
    if code == 0:
        assert "verified against transformers GPT2LMHeadModel" in result.output
        return
    assert "the imported model's outputs differ from GPT2LMHeadModel's by " in result.output
    assert "of their scale (tolerance 1e-04 in float32); nothing was written" in result.output
    assert "Traceback" not in result.output
    assert not out.exists() and not spec_out.exists()
