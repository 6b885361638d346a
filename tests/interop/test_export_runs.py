"""``arch export RUN``: a training run's best checkpoint goes out as a Hugging Face folder, found
the way ``arch train --init RUN`` finds it; a run id that names nothing exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import archlab
from archlab.cli.main import cli
from archlab.registry import Registry

transformers = pytest.importorskip("transformers")


def _fine_tuned_vit(tmp_path: Path) -> tuple[str, str, Path]:
    """A tiny ViT for the digits (8x8 grey, 10 classes) made with transformers, imported, and
    trained one epoch from it with ``arch train --init``: the registry URL, the run's id and the
    imported weights."""
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=48, num_labels=10,
    )  # fmt: skip
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    weights, spec = tmp_path / "vit.safetensors", tmp_path / "vit.json"
    runner = CliRunner()
    done = runner.invoke(
        cli, ["import", str(tmp_path / "vit"), "-o", str(weights), "--spec-out", str(spec)]
    )
    assert done.exit_code == 0, done.output
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    done = runner.invoke(
        cli,
        ["train", str(spec), "--registry", url, "--epochs", "1", "--batch-size", "256",
         "--init", str(weights)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    [run] = Registry(url).runs()
    return url, run.id, weights


def test_a_run_exports_its_best_checkpoint(tmp_path: Path) -> None:
    url, run_id, imported = _fine_tuned_vit(tmp_path)
    out = tmp_path / "hf"
    done = CliRunner().invoke(cli, ["export", run_id, "--to", "hf", str(out), "--registry", url])
    assert done.exit_code == 0, done.output
    assert "ViTForImageClassification" in done.output
    with Registry(url) as registry:
        run = registry.get(run_id)
        [checkpoint] = [a for a in run.artifacts if a.kind == "checkpoint"]
        trained = archlab.load_compiled(registry.artifact_file(run, checkpoint.path)).eval()
    back = transformers.ViTForImageClassification.from_pretrained(out).eval()
    image = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = trained(image=image)
        theirs = back(pixel_values=image).logits
        before = archlab.load_compiled(imported).eval()(image=image)
    assert float((theirs - ours).abs().max() / ours.abs().max()) <= 1e-5
    assert not torch.allclose(before, ours)  # the trained weights went out, not the imported


def test_an_unknown_run_exits_2_naming_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    Registry(url).close()  # an empty registry
    out = tmp_path / "hf"
    done = CliRunner().invoke(
        cli, ["export", "nosuchrun", "--to", "hf", str(out), "--registry", url]
    )
    assert done.exit_code == 2, done.output
    assert "MODEL nosuchrun: no such file or run in this registry" in done.output
    assert "Traceback" not in done.output
    assert not out.exists()
    # with no registry at all, the message says there was none to look the run up in
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    done = CliRunner().invoke(
        cli, ["export", "abc123", "--to", "hf", str(out), "--registry", missing]
    )
    assert done.exit_code == 2, done.output
    assert "MODEL abc123: no such file, and no registry to find a run in" in done.output
    assert not out.exists()


def test_a_run_without_a_checkpoint_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    spec = json.loads((Path(__file__).parents[2] / "specs/vit-tiny-digits.json").read_text())
    with Registry(url) as registry, registry.start_run(archlab.load_spec(spec), {}) as run:
        run_id = run.id
    done = CliRunner().invoke(
        cli, ["export", run_id, "--to", "hf", str(tmp_path / "hf"), "--registry", url]
    )
    assert done.exit_code == 2, done.output
    assert f"run {run_id}" in done.output and "has no checkpoint" in done.output
