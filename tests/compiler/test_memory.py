"""The memory check of ``compile_spec``: sizes known from the graph, refused before allocation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import archlab
from archlab.compiler import memory
from archlab.compiler.memory import ModelTooLargeError
from archlab.errors import UserInputError
from archlab.specs.analysis import analyze

ROOT = Path(__file__).parents[2]
SMALL = ["gpt-tiny", "vit-tiny-digits", "transformer-tiny"]


@pytest.fixture
def eight_gib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "host_memory", lambda: (8 * 2**30, "a test's figure"))


@pytest.mark.parametrize("stem", SMALL)
def test_counts_match_the_built_module(stem: str) -> None:
    model = archlab.compile_spec(ROOT / "specs" / f"{stem}.json")
    assert memory.parameter_count(model.graph) == sum(p.numel() for p in model.parameters())
    # the float64 tables of the build hold as many elements as the buffers they become, or more
    buffers = sum(b.numel() for b in model.buffers())
    assert memory.table_elements(model.graph) >= buffers - 64  # ALiBi slopes etc. are tiny


def test_sinusoidal_table_is_counted() -> None:
    doc = json.loads((ROOT / "specs" / "transformer-tiny.json").read_text(encoding="utf-8"))
    graph = analyze(archlab.load_spec(doc))
    assert memory.table_elements(graph) > 0


@pytest.mark.usefixtures("eight_gib")
def test_compile_spec_refuses_what_exceeds_memory() -> None:
    doc = json.loads((ROOT / "specs" / "gpt-tiny.json").read_text(encoding="utf-8"))
    doc["inputs"]["ids"]["vocab_size"] = 2**31 - 1
    with pytest.raises(ModelTooLargeError, match=r"1\.1 TB to build \(274\.9 G parameters") as info:
        archlab.compile_spec(doc)
    assert isinstance(info.value, UserInputError)
    with pytest.raises(ModelTooLargeError, match="more than --max-params 1,000"):
        archlab.compile_spec(doc, max_params=1000)


@pytest.mark.usefixtures("eight_gib")
def test_max_params_replaces_the_memory_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "host_memory", lambda: (1000, "a tiny machine"))
    path = ROOT / "specs" / "gpt-tiny.json"
    with pytest.raises(ModelTooLargeError, match="available \\(a tiny machine\\)"):
        archlab.compile_spec(path)
    model = archlab.compile_spec(path, max_params=1_089_152)
    assert sum(p.numel() for p in model.parameters()) == 1_089_152


def test_cgroup_limit_caps_mem_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_meminfo", lambda: (64 * 2**30, "MemAvailable"))
    monkeypatch.setattr(memory, "_cgroup_room", lambda: 2**30)
    assert memory.host_memory() == (2**30, "the memory left under this process's cgroup limit")
    monkeypatch.setattr(memory, "_cgroup_room", lambda: None)
    assert memory.host_memory() == (64 * 2**30, "MemAvailable")


def test_cgroup_room_leaves_the_page_cache_out(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("4294967296\n")
    (tmp_path / "memory.current").write_text("3221225472\n")
    (tmp_path / "memory.stat").write_text("anon 1073741824\nfile 2147483648\nkernel 0\n")
    assert memory._cgroup_room(tmp_path) == 3 * 2**30
    (tmp_path / "memory.max").write_text("max\n")
    assert memory._cgroup_room(tmp_path) is None
    assert memory._cgroup_room(tmp_path / "absent") is None


def test_a_cuda_build_is_checked_against_the_device_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(memory, "host_memory", lambda: (10**12, "a large host"))
    monkeypatch.setattr(memory, "device_memory", lambda device: (10**9, f"free on {device}"))
    doc = json.loads((ROOT / "specs" / "gpt-tiny.json").read_text(encoding="utf-8"))
    doc["inputs"]["ids"]["vocab_size"] = 2**22  # 0.54 G parameters: 1.1 GB in float16
    graph = analyze(archlab.load_spec(doc))
    memory.check_build(graph, torch.device("cpu"), torch.float16, None)  # the host holds it
    with pytest.raises(ModelTooLargeError, match=r"parameters of 2 bytes.*\(free on cuda:0\)"):
        memory.check_build(graph, torch.device("cuda:0"), torch.float16, None)
