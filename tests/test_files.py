"""Output paths: regular files are replaced atomically; devices and FIFOs are written through,
never replaced (the device nodes here are made in a temporary folder, so a failing test replaces
only them, never a node in /dev)."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from archlab.cli.main import cli
from archlab.files import OutputError, replace_atomically
from archlab.registry import Registry


def write_text(text: str) -> Callable[[str], None]:
    def write(path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    return write


def device_node(path: Path, major: int, minor: int, kind: int = stat.S_IFCHR) -> Path:
    """A device node like /dev/null (1, 3) or /dev/full (1, 7), made where the test can lose it."""
    try:
        os.mknod(path, kind | 0o666, os.makedev(major, minor))
    except PermissionError:
        pytest.skip("making device nodes needs root (CAP_MKNOD)")
    return path


class FifoReader:
    """Reads everything written into a FIFO, on a thread (opening a FIFO blocks until both ends
    are open)."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path, self.data = path, b""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with open(self.path, "rb") as f:
            self.data = f.read()

    def result(self) -> bytes:
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "nothing was written into the FIFO"
        return self.data


def test_a_fifo_is_written_through_not_replaced(tmp_path: Path) -> None:
    reader = FifoReader(tmp_path / "pipe")
    replace_atomically(tmp_path / "pipe", write_text("id,status\n"))
    assert reader.result() == b"id,status\n"
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temporary left behind


def test_a_character_device_is_written_through_and_a_full_one_gives_a_clear_error(
    tmp_path: Path,
) -> None:
    null = device_node(tmp_path / "null", 1, 3)
    replace_atomically(null, write_text("discarded"))
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    full = device_node(tmp_path / "full", 1, 7)
    with pytest.raises(OutputError, match=r"cannot write to .*full: No space left on device"):
        replace_atomically(full, write_text("x" * 100_000))
    assert stat.S_ISCHR(os.lstat(full).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "null"]


def test_block_devices_and_folders_are_refused(tmp_path: Path) -> None:
    block = device_node(tmp_path / "disk", 7, 200, stat.S_IFBLK)
    written: list[str] = []
    with pytest.raises(OutputError, match="is a block device"):
        replace_atomically(block, written.append)
    assert written == [] and stat.S_ISBLK(os.lstat(block).st_mode)
    with pytest.raises(OutputError, match="is a folder"):
        replace_atomically(tmp_path, written.append)
    assert written == []


def test_regular_files_and_links_are_still_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old")
    outside = tmp_path / "outside"
    outside.write_text("keep")
    (tmp_path / "link.csv").symlink_to(outside)
    replace_atomically(target, write_text("new"))
    replace_atomically(tmp_path / "link.csv", write_text("new"))
    assert target.read_text() == "new" and outside.read_text() == "keep"
    assert not (tmp_path / "link.csv").is_symlink()

    def fail(path: str) -> None:
        Path(path).write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        replace_atomically(target, fail)
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "out.csv", "outside"]


def test_write_through_off_replaces_even_a_fifo(tmp_path: Path) -> None:
    """Files inside the registry's own folders are always replaced, never written through."""
    os.mkfifo(tmp_path / "state.pt")
    replace_atomically(tmp_path / "state.pt", write_text("state"), write_through=False)
    assert (tmp_path / "state.pt").read_text() == "state"


def test_runs_export_into_a_fifo_and_a_full_device(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    Registry(url).close()  # read-only commands create no registry: make an empty one
    reader = FifoReader(tmp_path / "pipe")
    result = CliRunner().invoke(cli, ["runs", "export", "-o", str(tmp_path / "pipe"), "--format",
                                      "json", "--registry", url])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert reader.result() == b"[]\n" and stat.S_ISFIFO(os.lstat(tmp_path / "pipe").st_mode)
    full = device_node(tmp_path / "full", 1, 7)
    result = CliRunner().invoke(
        cli, ["runs", "export", "-o", str(full), "--format", "json", "--registry", url]
    )
    assert result.exit_code == 2 and "No space left on device" in result.output, result.output
    assert stat.S_ISCHR(os.lstat(full).st_mode)
