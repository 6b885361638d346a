"""``runners.explain_run``: relevance of a saved model on samples of data, drawn.

A digits ViT (specs/vit-tiny-digits.json, seeded initial weights: the maps need no training to
have the right shape) and a tiny byte-level GPT, both saved with ``CompiledModel.save``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from archlab import compile_spec, explain
from archlab.errors import UserInputError
from archlab.runners.data import load_data
from archlab.runners.explain_run import ExplainRunError, explain_run
from archlab.viz.explain import normalise

ROOT = Path(__file__).parents[2]


def small_gpt() -> dict[str, object]:
    doc = json.loads((ROOT / "specs/gpt-tiny.json").read_text())
    doc["inputs"]["ids"]["max_len"] = 32
    doc["nodes"]["tok"]["dim"] = 32
    doc["nodes"]["decoder"]["depth"] = 2
    return doc


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vit") / "vit.safetensors"
    torch.manual_seed(0)
    compile_spec(ROOT / "specs/vit-tiny-digits.json").save(path)
    return path


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("gpt")
    torch.manual_seed(0)
    compile_spec(small_gpt()).save(folder / "gpt.safetensors")
    (folder / "text.txt").write_text("To be, or not to be, that is the question.\n" * 30)
    return folder / "gpt.safetensors", folder / "text.txt"


def test_several_methods_batched_and_drawn(vit: Path, tmp_path: Path) -> None:
    out = tmp_path / "maps.png"
    methods = ["attention", "rollout", "generic", "chefer"]
    result = explain_run(str(vit), "digits", methods=methods, count=3, output=out)
    assert list(result.scores) == methods
    assert result.indices == (0, 1, 2)
    assert result.grid == (4, 4)
    for method in methods:
        assert result.scores[method].shape == (3, 16)
        assert result.targets[method] == result.predictions  # the predicted class by default
    assert result.labels == (0, 1, 2)
    picture = imread(out)  # a PNG matplotlib reads back
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    explain_run(str(vit), "digits", methods=["generic"], count=3, output=tmp_path / "1.png")
    taller = picture.shape[0] / imread(tmp_path / "1.png").shape[0]
    assert taller > 2  # 5 rows (images and 4 methods) against 2


def test_scores_equal_explain_on_the_picked_rows(vit: Path, tmp_path: Path) -> None:
    result = explain_run(
        str(vit), "digits", methods=["chefer"], indices=[5, 0, 9], output=tmp_path / "m.png"
    )
    assert result.indices == (5, 0, 9)
    from archlab.compiler import load_compiled

    model = load_compiled(vit, device="cpu")
    data = load_data("digits", model.spec)
    images = data.inputs["image"][torch.tensor([5, 0, 9])]
    expected = explain(model, method="chefer", image=images)
    np.testing.assert_allclose(result.scores["chefer"], expected.scores.numpy(), rtol=1e-5)


def test_tokens_give_html(gpt: tuple[Path, Path], tmp_path: Path) -> None:
    weights, text = gpt
    out = tmp_path / "tokens.html"
    result = explain_run(
        str(weights), f"text:{text}", methods=["attention", "generic"], count=2, output=out
    )
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count('class="sample"') == 4
    assert result.grid is None and result.token_panels is not None
    assert result.scores["generic"].shape == (2, 32)
    assert "rgba(220,30,30," in page


def test_normalise_is_per_sample() -> None:
    shown = normalise(np.array([[1.0, 3.0], [10.0, 10.0], [-2.0, 0.0]]))
    np.testing.assert_allclose(shown, [[0, 1], [0, 0], [0, 1]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": ["grad"]}, "attention, rollout, generic, chefer"),
        ({"indices": [1797]}, "outside digits's 1797 samples"),
        ({"count": 0}, "at least 1"),
        ({"indices": [0], "count": 2}, "not both"),
        ({"output": "maps.txt"}, ".png, .svg or .pdf"),
    ],
)
def test_bad_requests(vit: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        explain_run(str(vit), "digits", **kwargs)  # type: ignore[arg-type]


def test_missing_file_and_html_suffix(gpt: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ExplainRunError, match="no such file"):
        explain_run(str(tmp_path / "nothing.safetensors"), "digits")
    weights, text = gpt
    with pytest.raises(ExplainRunError, match="HTML page"):
        explain_run(str(weights), f"text:{text}", output=tmp_path / "x.png")
