"""timm checkpoints through ``import_pretrained`` and ``arch import``: a timm hub folder (or
``hf:timm/...`` id), a bare state-dict file with ``--timm-model``, the settings' sources printed,
and the check against timm (skipped with a note where timm is not installed).

timm is not installed here: the state dicts use timm's published key names (``timm_state`` of
``test_timm_vit``), and the reference is the existing conversion and timm's forward written out.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file
from test_timm_vit import TINY_ARGS, convert, timm_forward, timm_state
from torch import Tensor

import archlab
from archlab.cli import cli
from archlab.errors import InteropError
from archlab.interop.verify import generated_inputs

#: vit_tiny_patch16_224's real shapes: width 192, 12 layers, 16-pixel patches, 224-pixel images.
VIT_TINY = {"dim": 192, "depth": 12, "patch": 16, "image": 224, "hidden": 768, "classes": 7}


def hub_folder(
    folder: Path, name: str, state: dict[str, Tensor], how: str = "safetensors", **extra: Any
) -> Path:
    """``state`` saved as timm's ``push_to_hub`` writes it: config.json naming the architecture,
    with ``num_classes``, ``model_args`` and ``pretrained_cfg``, and the weights."""
    folder.mkdir()
    classes = int(state["head.weight"].shape[0]) if "head.weight" in state else 0
    config = {
        "architecture": name,
        "num_classes": classes,
        "num_features": int(state["norm.weight"].shape[0]),
        "global_pool": "token",
        "model_args": TINY_ARGS,
        "pretrained_cfg": {
            "tag": "augreg_in21k",
            "input_size": [3, 24, 24],
            "num_classes": classes,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        },
        **extra,
    }
    (folder / "config.json").write_text(json.dumps(config))
    if how == "safetensors":
        save_file(state, str(folder / "model.safetensors"))
    else:
        torch.save(state, folder / "pytorch_model.bin")
    return folder


def outputs(model: Any, state: dict[str, Tensor], reference: Any) -> None:
    """``model`` gives the converted reference's outputs, and timm's forward's (3 heads)."""
    image = generated_inputs(model, seed=3)["image"]
    with torch.inference_mode():
        got, want, timm_out = model(image), reference(image), timm_forward(state, image, heads=3)
    assert torch.equal(got, want)
    assert float((got - timm_out).abs().max() / timm_out.abs().max()) <= 1e-5


@pytest.mark.parametrize("how", ["safetensors", "bin"])
def test_hub_folder_imports_with_sources_printed(tmp_path: Path, how: str) -> None:
    name = "deit_small_distilled_patch16_224"
    state = timm_state(distilled=True)
    folder = hub_folder(tmp_path / "deit", name, state, how)
    out = tmp_path / "deit.safetensors"
    result = CliRunner().invoke(cli, ["import", str(folder), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"timm {name} (VisionTransformerDistilled):" in result.output
    assert "from the model name: distilled=True, no_embed_class=False" in result.output
    assert "from config.json's model_args: num_heads=3" in result.output
    assert "from the tensor shapes: embed_dim=48, depth=2, patch_size=8, img_size=24" in (
        result.output
    )
    assert "check against timm was skipped because timm is not installed" in result.output
    outputs(archlab.load_compiled(out).eval(), state, convert(name, state, TINY_ARGS))


def test_hub_id_reads_the_timm_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = timm_state()
    folder = hub_folder(tmp_path / "snapshot", "vit_small_patch16_224", state)
    asked = []
    monkeypatch.setattr(
        "archlab.interop.sources._from_hub", lambda repo: asked.append(repo) or folder
    )
    model = archlab.import_pretrained("hf:timm/vit_small_patch16_224.augreg_in21k")
    assert asked == ["timm/vit_small_patch16_224.augreg_in21k"]
    assert model.spec.name == "timm-vit_small_patch16_224.augreg_in21k"
    outputs(model, state, convert("vit_small_patch16_224", state, TINY_ARGS))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_bare_file_with_timm_model(tmp_path: Path, suffix: str) -> None:
    state = timm_state(**VIT_TINY)
    file = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(file))
    else:
        torch.save({"model": state}, file)  # a training checkpoint, as DeiT's releases hold
    out, spec_out = tmp_path / "out.safetensors", tmp_path / "out.json"
    args = ["--timm-model", "vit_tiny_patch16_224", "-o", str(out), "--spec-out", str(spec_out)]
    result = CliRunner().invoke(cli, ["import", str(file), *args])
    assert result.exit_code == 0, result.output
    assert "timm vit_tiny_patch16_224 (VisionTransformer):" in result.output
    assert "from the model name: num_heads=3, distilled=False" in result.output
    assert (
        "from the tensor shapes: embed_dim=192, depth=12, patch_size=16, img_size=224, "
        "in_chans=3, mlp_hidden=768, num_classes=7"
    ) in result.output
    assert "model_args" not in result.output
    reference = convert("vit_tiny_patch16_224", state, None)
    loaded = archlab.load_compiled(out).eval()
    assert loaded.spec_hash == archlab.spec_hash(spec_out) == reference.spec_hash
    outputs(loaded, state, reference)
    imported = archlab.import_pretrained(file, timm_model="vit_tiny_patch16_224")
    assert imported.spec_hash == reference.spec_hash
    assert imported.spec.name == "vit_tiny_patch16_224"


def _refused(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out.safetensors"
    result = CliRunner().invoke(cli, ["import", *args, "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_name_contradicting_the_shapes_exits_2(tmp_path: Path) -> None:
    file = tmp_path / "weights.safetensors"
    save_file(timm_state(**VIT_TINY), str(file))
    _refused(
        tmp_path,
        [str(file), "--timm-model", "vit_small_patch16_224"],
        "timm model 'vit_small_patch16_224' has embed_dim 384 by its name, but the weights "
        "have 192",
    )


def test_bare_file_without_timm_model_exits_2(tmp_path: Path) -> None:
    file = tmp_path / "weights.pth"
    torch.save(timm_state(), file)
    _refused(tmp_path, [str(file)], "pass the timm model it belongs to with --timm-model NAME")


def test_config_classes_contradicting_the_head_exits_2(tmp_path: Path) -> None:
    folder = hub_folder(tmp_path / "vit", "vit_small_patch16_224", timm_state(), num_classes=9)
    _refused(tmp_path, [str(folder)], "config.json says num_classes 9, but the weights' head has 5")


def test_timm_model_on_a_hugging_face_folder_exits_2(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "vit"}))
    _refused(
        tmp_path,
        [str(folder), "--timm-model", "vit_small_patch16_224"],
        "--timm-model is for timm checkpoints",
    )


@pytest.mark.parametrize(
    ("name", "differ"),
    [
        ("deit_small_patch16_224", "(family deit vs vit)"),
        ("vit_base_patch16_224", "(size base vs small)"),
        ("vit_small_patch8_224", "(patch 8 vs 16)"),
        ("vit_small_patch16_384", "(image 384 vs 224)"),
    ],
)
def test_timm_model_contradicting_the_hub_folder_exits_2(
    tmp_path: Path, name: str, differ: str
) -> None:
    # model_args give the tiny shapes, so every one of these names would fit the tensors
    folder = hub_folder(tmp_path / "vit", "vit_small_patch16_224", timm_state())
    _refused(
        tmp_path,
        [str(folder), "--timm-model", name],
        f"--timm-model {name} (timm_model= in Python) is not the model the folder's config.json "
        f"names, architecture vit_small_patch16_224 {differ}; drop --timm-model to import the "
        "folder as its config says, or fix the name",
    )


def test_timm_model_naming_the_folder_architecture_imports(tmp_path: Path) -> None:
    state = timm_state()
    folder = hub_folder(tmp_path / "vit", "vit_small_patch16_224", state)
    for name in ("vit_small_patch16_224", "vit_small_patch16_224.augreg_in21k"):
        model = archlab.import_pretrained(folder, timm_model=name)
        outputs(model, state, convert("vit_small_patch16_224", state, TINY_ARGS))
    unknown = hub_folder(tmp_path / "other", "vit_small_patch16_clip_224", state)
    with pytest.raises(InteropError, match="architecture vit_small_patch16_clip_224; drop"):
        archlab.import_pretrained(unknown, timm_model="vit_small_patch16_224")


class FakeTimmModel:
    """What the check uses of a timm model: ``load_state_dict``, ``float``, ``eval``, a call;
    its forward is timm's, written out (``timm_forward``)."""

    def __init__(self, created: dict[str, Any]) -> None:
        self.created, self.state = created, {}

    def load_state_dict(self, state: dict[str, Tensor], strict: bool) -> None:
        self.state = dict(state)

    def float(self) -> FakeTimmModel:
        return self

    def eval(self) -> FakeTimmModel:
        return self

    def __call__(self, image: Tensor) -> Tensor:
        return timm_forward(self.state, image, heads=3)


def test_verified_against_timm_when_it_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: dict[str, Any] = {}

    def create_model(name: str, **kwargs: Any) -> FakeTimmModel:
        created.update(kwargs, name=name)
        return FakeTimmModel(created)

    fake = types.ModuleType("timm")
    fake.create_model = create_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "timm", fake)
    folder = hub_folder(tmp_path / "deit3", "deit3_small_patch16_224", timm_state(**DEIT3))
    result = CliRunner().invoke(cli, ["import", str(folder), "-o", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert "verified against timm deit3_small_patch16_224 (FakeTimmModel): largest" in (
        result.output
    )
    assert created == {
        "name": "deit3_small_patch16_224",
        "pretrained": False,
        "num_classes": 5,
        **TINY_ARGS,
    }


DEIT3 = {"no_embed_class": True, "layer_scale": True}
