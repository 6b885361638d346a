"""``archlab.registry.handle``: the run handle ends its run as the exception says (or by hand,
once), buffers metrics until a flush or its registry's one heartbeat thread writes them, ends its
run even when the last write fails or a sweep marked it stale; and the registry installs no signal
handler (turning SIGTERM into an interruption is the runners' job). Tests taking ``registry`` run
on SQLite and PostgreSQL."""

from __future__ import annotations

import ast
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from registry_testing import history

import archlab
import archlab.registry
from archlab.registry import Registry, RegistryError
from archlab.registry.handle import HEARTBEAT_S

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


# --- ending a run ---------------------------------------------------------------------------------


def test_run_context_manager_completes(registry: Registry, spec: Doc) -> None:
    with registry.start_run(spec, {"lr": 0.1}) as run:
        assert registry.get(run.id).status == "running"
        run.log_metrics({"val_acc": 0.5}, step=0)
    got = registry.get(run.id)
    assert got.status == "completed"
    assert got.error is None
    assert got.ended is not None and got.started <= got.ended
    assert got.kind == "train"
    assert got.metrics == {"val_acc": 0.5}


def test_exception_fails_the_run_with_its_text(registry: Registry, spec: Doc) -> None:
    with pytest.raises(ValueError, match="diverged"), registry.start_run(spec) as run:
        run.log_metrics({"loss": 1.0}, step=0)
        raise ValueError("loss diverged at step 3")
    got = registry.get(run.id)
    assert got.status == "failed"
    assert got.error == "ValueError: loss diverged at step 3"
    assert got.metrics == {"loss": 1.0}  # metrics logged before the failure are kept


def test_keyboard_interrupt_interrupts_the_run(registry: Registry, spec: Doc) -> None:
    with pytest.raises(KeyboardInterrupt), registry.start_run(spec) as run:
        raise KeyboardInterrupt
    got = registry.get(run.id)
    assert got.status == "interrupted"
    assert "KeyboardInterrupt" in (got.error or "")


def test_end_by_hand_is_idempotent_and_checked(registry: Registry, spec: Doc) -> None:
    run = registry.start_run(spec)
    with pytest.raises(RegistryError, match="completed, failed or interrupted"):
        run.end("running")
    run.end("failed", "out of memory")
    run.end("completed")  # idempotent: the first end stands
    got = registry.get(run.id)
    assert (got.status, got.error) == ("failed", "out of memory")
    with pytest.raises(RegistryError, match="has ended"):
        run.log_metrics({"loss": 1.0})


# --- the metrics buffer and the heartbeat ---------------------------------------------------------


def test_metrics_are_buffered_until_a_flush(registry: Registry, spec: Doc) -> None:
    run = registry.start_run(spec, heartbeat=60)
    assert run._interval == 5.0  # the heartbeat (and its flush) never waits more than 5 s
    assert HEARTBEAT_S <= 5.0
    run.log_metrics({"loss": 2.0, "acc": 0.1}, step=0)
    run.log_metrics({"loss": 1.0, "acc": 0.2}, step=1)
    assert history(registry, run.id, "loss") == []  # buffered, not yet written
    beat = registry.get(run.id).heartbeat
    time.sleep(0.01)
    run.flush()
    assert history(registry, run.id, "loss") == [(0, 2.0), (1, 1.0)]
    assert registry.get(run.id).heartbeat > beat  # a flush is a heartbeat
    run.log_metrics({"loss": 0.5}, step=2)
    run.end()
    assert history(registry, run.id, "loss")[-1] == (2, 0.5)  # the end flushes


def test_the_heartbeat_flushes_in_the_background(registry: Registry, spec: Doc) -> None:
    run = registry.start_run(spec, heartbeat=0.1)
    start_beat = registry.get(run.id).heartbeat
    run.log_metrics({"loss": 1.0}, step=0)
    deadline = time.monotonic() + 10
    while not history(registry, run.id, "loss") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert history(registry, run.id, "loss") == [(0, 1.0)]
    assert registry.get(run.id).heartbeat > start_beat
    run.end()


def heartbeat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "archlab-heartbeat"]


def test_one_heartbeat_thread_serves_every_run_of_a_registry(
    registry_url: str, spec: Doc, isolated: Path
) -> None:
    before = len(heartbeat_threads())
    registry = Registry(registry_url, artifacts=isolated / "artifacts")
    fast = [registry.start_run(spec, heartbeat=0.05) for _ in range(3)]
    slow = registry.start_run(spec, heartbeat=60)  # beats every 5 s at most
    started = time.monotonic()
    assert len(heartbeat_threads()) == before + 1
    for i, run in enumerate([*fast, slow]):
        run.log_metrics({"loss": float(i)}, step=0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(history(registry, r.id, "loss") for r in fast):
        time.sleep(0.05)
    assert [history(registry, r.id, "loss") for r in fast] == [[(0, 0.0)], [(0, 1.0)], [(0, 2.0)]]
    if time.monotonic() - started < 4.5:  # (a very loaded machine may reach its period)
        assert history(registry, slow.id, "loss") == []  # its own, slower period
    for run in [*fast, slow]:
        run.end()
    assert history(registry, slow.id, "loss") == [(0, 3.0)]
    registry.close()
    deadline = time.monotonic() + 10
    while len(heartbeat_threads()) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(heartbeat_threads()) == before  # closing the registry stops its thread


def test_a_stopped_heartbeat_writes_nothing_more(registry: Registry, spec: Doc) -> None:
    run = registry.start_run(spec, heartbeat=0.05)
    run.flush()
    run._stop_heartbeat()  # as when the process stops without ending the run
    run.log_metrics({"loss": 1.0}, step=0)
    beat = registry.get(run.id).heartbeat
    time.sleep(0.3)
    assert registry.get(run.id).heartbeat == beat
    assert history(registry, run.id, "loss") == []
    run.end()
    assert history(registry, run.id, "loss") == [(0, 1.0)]


def test_a_large_buffer_is_written_in_one_batch(
    registry: Registry, spec: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = registry.start_run(spec, heartbeat=5)
    monkeypatch.setattr(run, "FLUSH_ROWS", 100)
    writes: list[int] = []
    real = registry._write_metrics

    def spy(handle: Any, points: list[Any], *args: Any) -> None:
        writes.append(len(points))
        real(handle, points, *args)

    monkeypatch.setattr(registry, "_write_metrics", spy)
    for step in range(99):
        run.log_metrics({"loss": 1 / (step + 1)}, step=step)
    assert writes == []
    run.log_metrics({"loss": 0.001}, step=99)  # the 100th point fills the buffer
    assert writes == [100]
    assert len(history(registry, run.id, "loss")) == 100
    run.end()


def test_a_failed_final_flush_still_ends_the_run(
    registry: Registry, spec: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = registry.start_run(spec)
    run.log_metrics({"loss": 1.0}, step=0)

    def fail(*args: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(registry, "_write_metrics", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        run.end()
    got = registry.get(run.id)
    assert got.status == "failed"
    assert "could not write the last metrics: RuntimeError: disk full" in (got.error or "")


def test_a_live_run_marked_stale_ends_as_it_really_ends(
    registry: Registry, registry_url: str, spec: Doc
) -> None:
    """A sweep with no grace (``arch runs gc --stale --grace 0s``) marks a live run interrupted;
    its next heartbeat makes it running again, and it ends completed, with its CV group's
    aggregates, whatever the sweeps said meanwhile."""
    group = registry.start_cv(spec, k=2)
    handle = registry.start_run(spec, cv_group=group, fold=0)
    handle.log_metrics({"val_acc": 0.5}, step=0)
    handle.flush()
    with Registry(registry_url, grace=None) as sweeper:
        time.sleep(0.01)
        assert sweeper.mark_stale(0.0) == [handle.id]
        assert sweeper.get(handle.id).status == "interrupted"
        handle.flush()  # the run's next heartbeat
        assert sweeper.get(handle.id).status == "running"
        assert sweeper.get(handle.id).error is None
        time.sleep(0.01)
        assert sweeper.mark_stale(0.0) == [handle.id]
        handle.log_metrics({"val_acc": 0.75}, step=1)
        handle.end()
        run = sweeper.get(handle.id)
        assert (run.status, run.error, run.metrics) == ("completed", None, {"val_acc": 0.75})
        aggregate = sweeper.group(group.id).aggregates["val_acc"]
        assert (aggregate.n, aggregate.mean) == (1, 0.75)
