"""What makes a training reproducible bit for bit besides its configuration and seeds: torch's
determinism settings and thread count (read, recorded, and applied again by ``arch train
--rerun``), and the working tree's uncommitted changes, kept with a run as an artifact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from archlab.registry import Registry

#: The artifact kind of a run's uncommitted changes (``git diff HEAD`` and untracked names).
CHANGES_KIND = "git-diff"
CHANGES_FILE = "uncommitted.diff"


def determinism_settings() -> dict[str, Any]:
    """torch's settings that decide whether the same computation gives the same bits:
    deterministic algorithms (and warn-only), cuDNN on / deterministic / benchmark, the float32
    matmul precision (TF32 on CUDA), and the inter-op thread count."""
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_enabled": bool(torch.backends.cudnn.enabled),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "interop_threads": torch.get_num_interop_threads(),
    }


@contextlib.contextmanager
def applied(settings: Mapping[str, Any], threads: int) -> Iterator[None]:
    """Train under recorded ``settings`` (``determinism_settings()``'s) and ``threads`` CPU
    threads; the settings before are restored after. The inter-op thread count is fixed once a
    process has started parallel work, so it is left as it is (and recorded as it is)."""
    before, threads_before = determinism_settings(), torch.get_num_threads()
    _apply(settings)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        _apply(before)
        torch.set_num_threads(threads_before)


def _apply(settings: Mapping[str, Any]) -> None:
    torch.use_deterministic_algorithms(
        bool(settings["deterministic_algorithms"]),
        warn_only=bool(settings.get("deterministic_warn_only", False)),
    )
    torch.backends.cudnn.enabled = bool(settings["cudnn_enabled"])
    torch.backends.cudnn.deterministic = bool(settings["cudnn_deterministic"])
    torch.backends.cudnn.benchmark = bool(settings["cudnn_benchmark"])
    torch.set_float32_matmul_precision(str(settings["matmul_precision"]))


def keep_changes(run: Any, registry: Registry, changes: str | None) -> None:
    """Keep ``changes`` (``working_tree_diff()``'s text) with ``run`` as its ``git-diff``
    artifact; nothing when the working tree had none."""
    if changes is None:
        return
    path = registry.run_folder(run.id) / CHANGES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(changes, encoding="utf-8")
    run.log_artifact(path, CHANGES_KIND)
