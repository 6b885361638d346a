"""How many CPU threads torch should use: the CPUs this process may really run on.

torch sizes its intra-op thread pool from the machine's cores. In a container, a Slurm job or
any cgroup with a CPU quota that is far more threads than the process gets: they take turns on
the quota, and on a shared CPU training ran 10x and batch-1 inference up to 200x slower than on
one thread. ``usable_cpus()`` counts what the process may use: the CPUs of its affinity mask
(``taskset``, Slurm's binding), capped by the CPU quota of its cgroup and every cgroup above it
(v2 ``cpu.max``, v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``). ``configure_threads(n)`` sets
torch's thread count to ``n``, or to ``usable_cpus()`` when ``n`` is None, unless
``OMP_NUM_THREADS`` already says how many.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

from archlab.errors import UserInputError

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


class ThreadsError(UserInputError):
    """A thread count that cannot be used (``--threads 0``)."""


def affinity_cpus() -> int:
    """The CPUs the scheduler may run this process on (its affinity mask)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cgroup_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota of this process's cgroups, in CPUs (``1.5`` for 150 ms per 100 ms), the
    tightest of its own and its ancestors'; None when no quota is set or none can be read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    quotas: list[float] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # cgroup v2: one unified hierarchy
            quotas += _quotas([root], path, _v2_quota)
        elif "cpu" in controllers.split(","):  # cgroup v1: the cpu controller's own mount
            mounts = [root / controllers, root / "cpu", root / "cpu,cpuacct"]
            quotas += _quotas(list(dict.fromkeys(mounts)), path, _v1_quota)
    if not lines:  # no /proc/self/cgroup: the root's own files, if any
        quotas += [q for q in (_v2_quota(root), _v1_quota(root)) if q is not None]
    return min(quotas) if quotas else None


def _quotas(mounts: list[Path], path: str, read: Callable[[Path], float | None]) -> list[float]:
    """The quotas along ``path`` under each mount, from the cgroup itself up to the mount.

    In a container the path /proc/self/cgroup names may not exist under the mount (the
    container sees its own cgroup as the root), so the mount's own files count too."""
    found: list[float] = []
    parts = [p for p in path.strip("/").split("/") if p]
    for mount in mounts:
        for depth in range(len(parts), -1, -1):
            quota = read(mount.joinpath(*parts[:depth]))
            if quota is not None:
                found.append(quota)
    return found


def _v2_quota(folder: Path) -> float | None:
    """``cpu.max``: ``max 100000`` (no limit) or ``QUOTA PERIOD`` in microseconds."""
    try:
        fields = (folder / "cpu.max").read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1])


def _v1_quota(folder: Path) -> float | None:
    """``cpu.cfs_quota_us`` (-1: no limit) over ``cpu.cfs_period_us``."""
    try:
        quota = (folder / "cpu.cfs_quota_us").read_text().strip()
        period = (folder / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def usable_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """The CPUs this process may really use: its affinity mask, capped by its cgroups' CPU quota
    (rounded down, at least 1: a thread more than the quota only waits for its turn)."""
    cpus = affinity_cpus()
    quota = cgroup_cpus(root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count and return it.

    ``threads``: that many (``--threads N``); None: ``OMP_NUM_THREADS`` when it is set (torch
    already follows it), else ``usable_cpus()``."""
    import torch

    if threads is None:
        if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
            return torch.get_num_threads()
        threads = usable_cpus()
    if threads < 1:
        raise ThreadsError(f"--threads {threads}: give at least 1 thread")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
