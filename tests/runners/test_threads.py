"""``runners/threads.py``: the CPUs a process may use, from its affinity mask and fake cgroup
files (v2 ``cpu.max``, v1 CFS quota), and torch's thread count set from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from archlab.runners import threads
from archlab.runners.threads import cgroup_cpus, configure_threads, usable_cpus


@pytest.fixture(autouse=True)
def _restore_threads() -> object:
    before = torch.get_num_threads()
    yield None
    torch.set_num_threads(before)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _v2(tmp_path: Path, cpu_max: dict[str, str], own: str = "/job/step") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for folder, text in cpu_max.items():
        _write(root / folder / "cpu.max", text)
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(f"0::{own}\n")
    return root, proc


def test_v2_quota_in_cpus(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, {"job/step": "150000 100000\n"})
    assert cgroup_cpus(root, proc) == 1.5


def test_v2_the_tightest_ancestor_wins(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, {"job/step": "max 100000", "job": "200000 100000", "": "max 100000"})
    assert cgroup_cpus(root, proc) == 2.0


def test_v2_no_limit(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, {"job/step": "max 100000", "": "max 100000"})
    assert cgroup_cpus(root, proc) is None


def test_v2_inside_a_container_reads_the_mounts_own_files(tmp_path: Path) -> None:
    # /proc/self/cgroup names a host path the container's mount does not have
    root, proc = _v2(tmp_path, {"": "100000 100000"}, own="/kubepods/pod1/abc")
    assert cgroup_cpus(root, proc) == 1.0


def test_v1_cfs_quota(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    _write(root / "cpu,cpuacct/slurm/job1/cpu.cfs_quota_us", "300000\n")
    _write(root / "cpu,cpuacct/slurm/job1/cpu.cfs_period_us", "100000\n")
    _write(root / "cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    _write(root / "cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text("4:memory:/slurm/job1\n3:cpu,cpuacct:/slurm/job1\n0::/\n")
    assert cgroup_cpus(root, proc) == 3.0


def test_unreadable_or_garbled_files_mean_no_quota(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, {"job/step": "lots 100000"})
    assert cgroup_cpus(root, proc) is None
    assert cgroup_cpus(tmp_path / "nowhere", tmp_path / "no_proc_file") is None


def test_usable_cpus_caps_the_affinity_by_the_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threads, "affinity_cpus", lambda: 16)
    root, proc = _v2(tmp_path, {"job/step": "250000 100000"})
    assert usable_cpus(root, proc) == 2  # 2.5 CPUs of quota: 2 threads, not 16
    root, proc = _v2(tmp_path / "small", {"job/step": "50000 100000"})
    assert usable_cpus(root, proc) == 1  # half a CPU still runs one thread
    root, proc = _v2(tmp_path / "free", {"job/step": "max 100000"})
    assert usable_cpus(root, proc) == 16
    monkeypatch.setattr(threads, "affinity_cpus", lambda: 3)  # taskset -c 0-2
    root, proc = _v2(tmp_path / "wide", {"job/step": "800000 100000"})
    assert usable_cpus(root, proc) == 3


def test_usable_cpus_counts_the_affinity_mask() -> None:
    import os

    assert threads.affinity_cpus() == len(os.sched_getaffinity(0))


def test_configure_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda *a, **k: 1)
    assert configure_threads(None) == 1 and torch.get_num_threads() == 1
    assert configure_threads(2) == 2 and torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own setting is left to torch
    torch.set_num_threads(3)
    assert configure_threads(None) == 3
    with pytest.raises(threads.ThreadsError, match="at least 1"):
        configure_threads(0)
