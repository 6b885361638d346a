"""``archlab.registry.handle``: the run handle ends its run as the exception says, and the
registry installs no signal handler (turning SIGTERM into an interruption is the runners' job)."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import archlab.registry
from archlab.registry import Registry

Doc = dict[str, Any]


def test_the_registry_installs_no_signal_handler() -> None:
    root = Path(archlab.registry.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert "signal" not in names, f"{path} imports signal"


def test_a_keyboard_interrupt_ends_the_run_interrupted(
    registry: Registry, minimal_vit: Callable[[], Doc]
) -> None:
    try:
        with registry.start_run(minimal_vit()) as run:
            run.log_metrics({"loss": 1.0}, step=0)
            raise KeyboardInterrupt("stopped by SIGTERM")
    except KeyboardInterrupt:
        pass
    got = registry.get(run.id)
    assert (got.status, got.error, got.metrics) == (
        "interrupted",
        "stopped by SIGTERM",
        {"loss": 1.0},
    )
