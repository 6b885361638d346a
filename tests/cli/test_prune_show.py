"""``arch prune show``: the picture of which patches each pruning stage kept, and its mistakes.

The shared registry (module scope, read-only) holds runs made through the registry API, each with
an untrained checkpoint (seeded initial weights: untrained keep counts are the declared ones) and
the configuration ``{"data": "digits"}`` (a hold-out split), so nothing here trains:

- ``dynamic``: specs/dynamicvit-tiny-digits.json (16 -> 12 -> 9 patches, before layers 0 and 1);
- ``tome``: vit-tiny-digits with ToMe merging 3 pairs at layers 1 and 2 (16 -> 13 -> 10 tokens);
- ``evit``: vit-tiny-digits with EViT, keep 0.7 and fuse at layers 1 and 2;
- ``dense``: vit-tiny-digits (no pruning); ``features``: a features-input spec with DynamicViT;
- ``bare``: a dynamicvit run without a checkpoint; ``moved``: a fold run of a CV group whose
  recorded validation fingerprint the split no longer matches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from archlab import compile_spec
from archlab.cli import cli
from archlab.registry import Registry
from archlab.runners import prune_show
from archlab.runners.config import TrainConfig
from archlab.runners.data import load_data
from archlab.runners.train import _split
from archlab.viz import patches
from archlab.viz.save import PlotError

ROOT = Path(__file__).parents[2]
DYNAMIC = ROOT / "specs/dynamicvit-tiny-digits.json"
VIT = ROOT / "specs/vit-tiny-digits.json"
CONFIG = {"data": "digits"}


def vit_with(prune: dict[str, Any] | None, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(VIT.read_text())
    doc["name"] = name
    if prune is not None:
        doc["nodes"]["encoder"]["prune"] = prune
    return doc


TOME = vit_with({"method": "merge", "at": [1, 2], "r": 3}, "tome-tiny-digits")
EVIT = vit_with({"method": "attention_topk", "at": [1, 2], "keep": 0.7, "fuse": True}, "evit-tiny")
FEATURES = {
    "version": 1,
    "name": "pruned-features",
    "inputs": {"x": {"kind": "features", "dim": 16, "max_len": 10}},
    "nodes": {
        "cls": {"op": "cls_token", "input": "x"},
        "enc": {
            "op": "encoder",
            "input": "cls",
            "depth": 2,
            "block": {"attention": {"heads": 2}},
            "prune": {"method": "dynamic", "at": [1], "keep": 0.5},
        },
        "head": {"op": "classify", "input": "enc", "classes": 10},
    },
    "outputs": "head",
}


@dataclass
class Fixture:
    url: str
    dynamic: str
    tome: str
    evit: str
    dense: str
    features: str
    bare: str
    moved: str


def _with_checkpoint(reg: Registry, spec: Any, folder: Path, name: str) -> str:
    model = compile_spec(spec, seed=0)
    with reg.start_run(spec, CONFIG) as run:
        path = folder / f"{name}.safetensors"
        model.save(path)
        run.log_artifact(path, "checkpoint")
    return run.id


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    folder = tmp_path_factory.mktemp("prune")
    url = f"sqlite:///{folder / 'r.db'}"
    dynamic = json.loads(DYNAMIC.read_text())
    with Registry(url) as r:
        runs = {
            name: _with_checkpoint(r, spec, folder, name)
            for name, spec in [
                ("dynamic", dynamic),
                ("tome", TOME),
                ("evit", EVIT),
                ("dense", vit_with(None, "vit-tiny-digits")),
                ("features", FEATURES),
            ]
        }
        with r.start_run(dynamic, CONFIG) as bare:
            bare.log_metrics({"train_loss": 2.3}, step=0)
        group = r.start_cv(dynamic, {"data": "digits", "folds": 3}, k=3)
        with r.start_run(
            dynamic,
            {"data": "digits", "folds": 3},
            cv_group=group,
            fold=1,
            train_indices=[3, 4, 5],
            val_indices=[0, 1, 2],  # not what a 3-fold split of digits gives
        ) as moved:
            model = compile_spec(dynamic, seed=0)
            model.save(folder / "moved.safetensors")
            moved.log_artifact(folder / "moved.safetensors", "checkpoint")
    return Fixture(url, bare=bare.id, moved=moved.id, **runs)


def invoke(reg: Fixture, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["prune", "show", *args, "--registry", reg.url])
    return result.exit_code, result.stdout, result.stderr


def ok(reg: Fixture, *args: str) -> str:
    code, out, err = invoke(reg, *args)
    assert code == 0, (args, out, err)
    return out


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def digits(n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    data = load_data("digits", compile_spec(DYNAMIC).spec)
    return {"image": data.inputs["image"][:n]}, data.targets[:n]


# ----------------------------------------------------------------------------------- the picture


def test_the_png_has_a_row_per_image_and_a_column_per_stage(reg: Fixture, tmp_path: Path) -> None:
    two, five = tmp_path / "two.png", tmp_path / "five.png"
    out = ok(reg, reg.dynamic, "--images", "2", "-o", str(two))
    assert f"wrote {two}: 2 image(s) from the validation split of run {reg.dynamic}" in out
    assert "encoder.prune.0 (dynamic): 12/16 patches" in out
    assert "encoder.prune.1 (dynamic): 9/16 patches" in out
    ok(reg, reg.dynamic, "--images", "5", "-o", str(five))
    (w2, h2), (w5, h5) = image_size(two), image_size(five)
    assert w2 == w5  # the same columns: the image and two stages
    assert h5 - h2 == pytest.approx(3 * patches.PANEL_INCHES * 100, abs=8)  # 3 more rows
    assert w2 == pytest.approx(3 * patches.PANEL_INCHES * 100, abs=8)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left beside

    tome = tmp_path / "tome.png"
    out = ok(reg, reg.tome, "--images", "2", "-o", str(tome))
    assert "encoder.prune.1 (merge): 16 patches → 13 tokens" in out
    assert "encoder.prune.2 (merge): 16 patches → 10 tokens" in out
    assert image_size(tome) == (w2, h2)


def test_the_default_output_is_kept_png(
    reg: Fixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = ok(reg, reg.dynamic, "--images", "1")
    assert out.startswith("wrote kept.png: 1 image(s)")
    assert image_size(tmp_path / "kept.png")[0] > 0


def test_data_draws_its_first_examples_and_the_default_is_the_validation_split(
    reg: Fixture, tmp_path: Path
) -> None:
    out = ok(reg, reg.dynamic, "--data", "digits", "--images", "3", "-o", str(tmp_path / "d.png"))
    assert "3 image(s) from digits (dynamicvit-tiny-digits)" in out
    with Registry(reg.url) as registry:
        given = prune_show.show_run(
            reg.dynamic, registry, output=tmp_path / "a.png", data_source="digits", images=4
        )
        own = prune_show.show_run(reg.dynamic, registry, output=tmp_path / "b.png", images=4)
    assert given.panels.labels == (0, 1, 2, 3)  # digits' first four images are 0, 1, 2, 3
    data = load_data("digits", compile_spec(DYNAMIC).spec)
    val = _split(data, TrainConfig(**CONFIG)).folds[0].val
    assert own.panels.labels == tuple(data.targets[torch.tensor(val[:4])].tolist())
    assert own.panels.labels != given.panels.labels
    assert own.source == f"the validation split of run {reg.dynamic}"
    assert own.panels.predictions is not None and len(own.panels.predictions) == 4


# ------------------------------------------------------------------------------ the panel data


def test_dynamicvit_panels_show_the_declared_keep_counts() -> None:
    model = compile_spec(DYNAMIC, seed=0)
    model.train()  # kept_panels must switch to eval: in training nothing is removed
    inputs, labels = digits(4)
    panels = prune_show.kept_panels(model, inputs, labels)
    assert not model.training
    assert [s.name for s in panels.stages] == ["encoder.prune.0", "encoder.prune.1"]
    assert panels.grid == (4, 4) and panels.patch == (2, 2)
    first, second = panels.stages
    assert first.visible.sum(1).tolist() == [12] * 4
    assert second.visible.sum(1).tolist() == [9] * 4
    assert not (second.visible & ~first.visible).any()  # a dropped patch stays dropped
    assert [first.describe(r) for r in range(4)] == ["12/16 patches"] * 4
    assert panels.labels == (0, 1, 2, 3) and panels.predictions is not None

    # the drawn panel: dropped patches are blanked to DROPPED, kept ones are the image itself
    for stage in panels.stages:
        for row in range(4):
            drawn = patches.stage_image(panels, stage, row)
            kept = np.kron(stage.visible[row].reshape(4, 4), np.ones((2, 2))).astype(bool)
            np.testing.assert_array_equal(drawn[kept], panels.images[row][kept])
            assert np.allclose(drawn[~kept], patches.DROPPED)
            assert (~kept).sum() == 4 * (16 - stage.kept(row))


def test_merge_panels_colour_each_merged_group() -> None:
    model = compile_spec(TOME, seed=0)
    panels = prune_show.kept_panels(model, *digits(3))
    for stage, tokens in zip(panels.stages, (13, 10), strict=True):
        assert stage.method == "merge" and stage.visible.all()  # merging drops nothing
        for row in range(3):
            assert stage.tokens(row) == tokens
            groups = stage.merged_groups(row)
            assert sum(len(g) - 1 for g in groups) == 16 - tokens  # patches absorbed
            image = panels.images[row]
            drawn = patches.stage_image(panels, stage, row)
            alpha = patches.MERGE_ALPHA
            colours = []
            for group in groups:
                mask = np.zeros(16, dtype=bool)
                mask[group] = True
                pixels = np.kron(mask.reshape(4, 4), np.ones((2, 2))).astype(bool)
                colour = (drawn[pixels] - (1 - alpha) * image[pixels]) / alpha
                assert np.allclose(colour, colour[0], atol=1e-6)  # one colour per group
                colours.append(tuple(np.round(colour[0], 4)))
            assert len(set(colours[:10])) == len(colours[:10])  # neighbours tell apart
            single = np.ones(16, dtype=bool)
            for group in groups:
                single[group] = False
            pixels = np.kron(single.reshape(4, 4), np.ones((2, 2))).astype(bool)
            np.testing.assert_array_equal(drawn[pixels], image[pixels])  # lone tokens as is


def test_evit_fused_patches_are_not_counted_as_kept() -> None:
    panels = prune_show.kept_panels(compile_spec(EVIT, seed=0), *digits(2))
    first, second = panels.stages
    assert first.visible.sum(1).tolist() == [12, 12] and first.fused.sum(1).tolist() == [4, 4]
    assert second.visible.sum(1).tolist() == [9, 9] and second.fused.sum(1).tolist() == [7, 7]
    assert first.describe() == "12/16 patches + fused"


def test_display_rescales_each_image_to_the_unit_range() -> None:
    x = torch.stack([torch.linspace(-3, 5, 48).view(3, 4, 4), torch.full((3, 4, 4), 2.0)])
    shown, grey = prune_show.display_images(x)
    assert not grey and shown.shape == (2, 4, 4, 3)
    assert shown[0].min() == 0.0 and shown[0].max() == 1.0
    assert np.all(shown[1] == 0.5)  # a flat image: mid grey
    shown, grey = prune_show.display_images(torch.rand(1, 1, 4, 4) * 16)
    assert grey and np.all(shown[..., 0] == shown[..., 2])


def test_a_failed_write_is_a_plot_error_and_leaves_nothing(tmp_path: Path) -> None:
    panels = prune_show.kept_panels(compile_spec(DYNAMIC, seed=0), *digits(1))
    with pytest.raises(PlotError, match="cannot write"):
        patches.draw_kept(panels, tmp_path / "gone" / "kept.png", "title")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------- mistakes


@pytest.mark.parametrize(
    ("run", "args", "message"),
    [
        ("nope1234", (), "no run 'nope1234' in this registry"),
        ("bare", (), "has no checkpoint artifact to draw from"),
        ("dense", (), "spec vit-tiny-digits has no token pruning stages"),
        ("features", (), "spec pruned-features has no image input (its inputs: x (features))"),
        ("moved", (), "validation split cannot be rebuilt"),
        ("dynamic", ("--images", "0"), "--images is how many images to draw: at least 1, not 0"),
        ("dynamic", ("-o", "kept.jpg"), "cannot tell the format of 'kept.jpg'"),
        ("dynamic", ("--data", "text:README.md"), "is a classifier"),
    ],
)
def test_mistakes_exit_2_with_a_message(
    reg: Fixture, tmp_path: Path, run: str, args: tuple[str, ...], message: str
) -> None:
    run_id = getattr(reg, run, run)
    output = () if "-o" in args else ("-o", str(tmp_path / "k.png"))
    code, out, err = invoke(reg, run_id, *args, *output)
    assert code == 2, (code, out, err)
    assert message in err, err
    assert err.startswith("error: ") and "Traceback" not in out + err
    assert not (tmp_path / "k.png").exists()


def test_unwritable_outputs_exit_2_before_loading_anything(reg: Fixture, tmp_path: Path) -> None:
    file = tmp_path / "file.txt"
    file.write_text("x")
    for output, message in [
        (tmp_path / "missing" / "k.png", "does not exist"),
        (file / "k.png", "is not a folder"),
    ]:
        code, out, err = invoke(reg, "nope1234", "-o", str(output))  # output checked first
        assert code == 2 and message in err and "Traceback" not in out + err, err
    (tmp_path / "dir.png").mkdir()
    code, _, err = invoke(reg, reg.dynamic, "-o", str(tmp_path / "dir.png"))
    assert code == 2 and "is a folder" in err, err


def test_help_lists_the_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and "arch prune show RUN" in result.stdout
    result = CliRunner().invoke(cli, ["prune", "show", "--help"])
    assert result.exit_code == 0
    for flag in ("--data", "--images", "-o, --output", "--registry", "kept.png"):
        assert flag in result.stdout
