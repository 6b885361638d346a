"""Maps of embeddings drawn from plain arrays: one marker per point, a legend entry per class,
colours by class count, token texts, and the file written in each format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from PIL import Image

from archlab.viz import embed
from archlab.viz.embed import draw_map
from archlab.viz.save import PlotError


def points(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 2))


def markers(fig: object) -> int:
    """Every marker drawn in the figure's axes."""
    ax = fig.axes[0]  # type: ignore[attr-defined]
    return sum(len(c.get_offsets()) for c in ax.collections)


def legend_texts(fig: object) -> list[str]:
    legend = fig.axes[0].get_legend()  # type: ignore[attr-defined]
    return [] if legend is None else [t.get_text() for t in legend.get_texts()]


def test_a_map_has_one_marker_per_point_and_a_legend_entry_per_class(tmp_path: Path) -> None:
    labels = [3, 1, 2, 1, 3, 3, 2, 1, 1, 2] * 3
    path = tmp_path / "map.png"
    fig = draw_map(points(30), labels, path, "digits, t-SNE")
    assert markers(fig) == 30
    assert legend_texts(fig) == ["1", "2", "3"]
    ax = fig.axes[0]
    assert ax.get_title() == "digits, t-SNE"
    for collection, tab in zip(ax.collections, ("C0", "C1", "C2"), strict=True):
        assert tuple(collection.get_facecolor()[0][:3]) == pytest.approx(to_rgba(tab)[:3])
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (800, 650)
    assert path.stat().st_size > 5_000


def test_each_point_keeps_its_place_and_class(tmp_path: Path) -> None:
    xy = points(12)
    labels = np.array(["cat", "dog", "eel"] * 4)
    fig = draw_map(xy, labels, tmp_path / "m.png", "t")
    for collection, cls in zip(fig.axes[0].collections, ("cat", "dog", "eel"), strict=True):
        np.testing.assert_allclose(collection.get_offsets(), xy[labels == cls])


def test_many_classes_take_continuous_colours_then_a_colour_bar(tmp_path: Path) -> None:
    labels = np.arange(50) % 25
    fig = draw_map(points(50), labels, tmp_path / "m.svg", "t")
    assert legend_texts(fig) == [str(i) for i in range(25)]
    colours = [tuple(c.get_facecolor()[0]) for c in fig.axes[0].collections]
    assert len(set(colours)) == 25  # no colour reused, as tab10 would after ten
    assert "<svg" in (tmp_path / "m.svg").read_text()
    many = draw_map(points(80), np.arange(80) % 40, tmp_path / "m.pdf", "t")
    assert legend_texts(many) == [] and len(many.axes) == 2  # the colour bar's axes
    assert markers(many) == 80
    assert (tmp_path / "m.pdf").read_bytes().startswith(b"%PDF")


def test_unlabelled_points_have_no_legend(tmp_path: Path) -> None:
    fig = draw_map(points(20), None, tmp_path / "m.png", "t")
    assert markers(fig) == 20 and legend_texts(fig) == []


def test_token_maps_write_each_token_or_a_readable_subset(tmp_path: Path) -> None:
    tokens = [f"t{i}" for i in range(20)]
    tokens[5] = "\n"
    fig = draw_map(points(20), None, tmp_path / "tok.png", "tokens", texts=tokens)
    written = [t.get_text() for t in fig.axes[0].texts]
    assert sorted(written) == sorted([*(t for t in tokens if t != "\n"), "\\n"])
    many = [f"w{i}" for i in range(500)]
    fig = draw_map(points(500), None, tmp_path / "tok.png", "tokens", texts=many)
    assert len(fig.axes[0].texts) == embed.TEXTS_UP_TO
    assert markers(fig) == 500


def test_spread_subset_picks_far_apart_points() -> None:
    xy = np.concatenate([np.zeros((50, 2)), [[10.0, 0.0], [0.0, 10.0]]])
    assert embed.spread_subset(xy, 3) == [0, 50, 51]
    assert embed.spread_subset(xy[:4], 10) == [0, 1, 2, 3]


def test_bad_maps_are_plot_errors(tmp_path: Path) -> None:
    with pytest.raises(PlotError, match="cannot tell the format"):
        draw_map(points(5), None, tmp_path / "m.bmp", "t")
    with pytest.raises(PlotError, match=r"\(n, 2\) points"):
        draw_map(np.zeros((5, 3)), None, tmp_path / "m.png", "t")
    with pytest.raises(PlotError, match="4 labels for 5 points"):
        draw_map(points(5), [1, 2, 3, 4], tmp_path / "m.png", "t")
    with pytest.raises(PlotError, match="does not exist"):
        draw_map(points(5), None, tmp_path / "no" / "m.png", "t")
    assert list(tmp_path.iterdir()) == []
