"""viz draws plain data: a ``PlotSummary`` built by hand (no registry) and ``KeptPanels`` of numpy
arrays (no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from archlab.registry.series import Curve, PlotSummary, per_step
from archlab.viz import patches
from archlab.viz.curves import draw_curves
from archlab.viz.patches import KeptPanels, StagePanel
from archlab.viz.save import PlotError


def curve(fold: int, values: list[float]) -> Curve:
    steps = tuple(range(1, len(values) + 1))
    return Curve(f"r{fold}", f"fold {fold}", fold, "completed", steps, tuple(values), steps)


def test_curves_of_a_group_from_plain_data(tmp_path: Path) -> None:
    curves = (curve(0, [0.5, 0.6, 0.7]), curve(1, [0.4, 0.6, 0.9]))
    steps, mean, std, counts = per_step(curves)
    path = tmp_path / "g.png"
    draw_curves(
        PlotSummary(
            path=path, format="png", metric="val_acc", title="t", run_id=None, group_id="g1",
            k=2, curves=curves, skipped=(), steps=steps, mean=mean, std=std, counts=counts,
            final_mean=0.8, final_std=0.1, final_n=2, final_source="completed folds",
        )
    )  # fmt: skip
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > image.height  # two panels side by side


def test_a_single_run_as_svg(tmp_path: Path) -> None:
    path = tmp_path / "r.svg"
    draw_curves(
        PlotSummary(path, "svg", "loss", "t", "r0", None, None, (curve(0, [3.0, 2.0]),), ())
    )
    assert "<svg" in path.read_text()


def panels() -> KeptPanels:
    """Two 4x4 images of 2x2 patches; one stage that drops patch 0 of each."""
    visible = np.ones((2, 4), dtype=bool)
    visible[:, 0] = False
    slot = np.tile(np.arange(4), (2, 1))
    slot[:, 0] = -1
    stage = StagePanel("s0", "score", visible, np.zeros((2, 4), dtype=bool), slot)
    images = np.full((2, 4, 4, 3), 0.2)
    return KeptPanels(images, False, (2, 2), (2, 2), (stage,), labels=(1, 2), predictions=(1, 3))


def test_stage_image_greys_the_dropped_patch() -> None:
    kept = panels()
    drawn = patches.stage_image(kept, kept.stages[0], 0)
    assert np.allclose(drawn[:2, :2], patches.DROPPED)
    assert np.allclose(drawn[2:, :], 0.2) and np.allclose(drawn[:2, 2:], 0.2)


def test_kept_patches_from_plain_arrays(tmp_path: Path) -> None:
    path = tmp_path / "k.png"
    patches.draw_kept(panels(), path, "title")
    with Image.open(path) as image:
        width, height = image.size
    assert width == pytest.approx(2 * patches.PANEL_INCHES * 100, abs=8)  # image + one stage
    assert height == pytest.approx(2 * patches.PANEL_INCHES * 100 + 50, abs=8)
    with pytest.raises(PlotError, match="cannot tell the format"):
        patches.draw_kept(panels(), tmp_path / "k.bmp", "title")
