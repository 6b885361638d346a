"""``archlab.viz.save``: the one check and write every picture goes through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from archlab.viz.save import PlotError, check_output, new_figure, save


@pytest.mark.parametrize("name", ["c.gif", "c.jpg", "c", "c.png.txt"])
def test_an_unknown_suffix_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(PlotError, match=r"cannot tell the format of .*\.png, \.svg or \.pdf"):
        check_output(tmp_path / name)


@pytest.mark.parametrize(("name", "fmt"), [("a.png", "png"), ("b.SVG", "svg"), ("c.pdf", "pdf")])
def test_the_suffix_picks_the_format(tmp_path: Path, name: str, fmt: str) -> None:
    assert check_output(tmp_path / name) == (tmp_path / name, fmt)


def test_bad_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(PlotError, match="does not exist"):
        check_output(tmp_path / "no" / "c.png")
    (tmp_path / "file").write_text("x")
    with pytest.raises(PlotError, match="is not a folder"):
        check_output(tmp_path / "file" / "c.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(PlotError, match="is a folder, not a file name"):
        check_output(tmp_path / "dir.png")


def test_an_unwritable_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the permission bits are faked: root (as in CI containers) writes in any folder
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode)
    )
    with pytest.raises(PlotError, match="cannot write in the folder"):
        check_output(locked / "c.png")
    check_output(tmp_path / "c.png")  # the check itself is not what failed


def test_save_replaces_a_file_and_a_failed_write_leaves_it(tmp_path: Path) -> None:
    fig = new_figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    path = tmp_path / "c.png"
    path.write_bytes(b"old")
    save(fig, path, "png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = path.read_bytes()
    with pytest.raises(ValueError, match="nosuchformat"):
        save(fig, path, "nosuchformat")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png"]  # no temporary left
    with pytest.raises(PlotError, match="cannot write"):
        save(fig, tmp_path / "gone" / "c.png", "png")


def test_save_writes_into_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.svg"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    fig = new_figure(figsize=(2, 2))
    save(fig, fifo, "svg")
    out, _ = reader.communicate(timeout=30)
    assert b"<svg" in out
    assert fifo.is_fifo()  # written into, not replaced


def test_drawing_leaves_the_global_matplotlib_state_alone(tmp_path: Path) -> None:
    code = (
        "import sys, matplotlib\n"
        "matplotlib.use('svg')\n"
        "from archlab.viz.save import new_figure, save\n"
        "fig = new_figure(figsize=(2, 2))\n"
        "fig.subplots().plot([0, 1])\n"
        f"save(fig, {str(tmp_path / 'c.png')!r}, 'png')\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
