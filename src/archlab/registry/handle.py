"""A running run's handle and the heartbeat that keeps live runs' metrics flowing.

``RunHandle`` buffers metrics and hands them to its registry in batches; ``Heartbeat`` is one
background thread per registry that flushes every live handle and beats its heartbeat. The
store installs no signal handler: turning SIGTERM into an interruption is the runners' job
(``archlab.runners.lifecycle``); a handle only ends its run the way the exception says.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from archlab.registry.engine import RegistryError, check_text, storable_error
from archlab.registry.records import Artifact
from archlab.registry.summaries import Point, SeriesSummary

if TYPE_CHECKING:
    from archlab.registry.store import Registry

STATUSES = ("running", "completed", "failed", "interrupted")
HEARTBEAT_S = 2.0  # background heartbeat and metric flush period (the issue asks for <= 5 s)


class Heartbeat:
    """One background thread per registry that flushes each live run's metrics and beats its
    heartbeat every ``heartbeat`` seconds (a thread per run cost more than a short run itself)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[RunHandle, float] = {}
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, handle: RunHandle) -> None:
        with self._cond:
            self._due[handle] = time.monotonic() + handle._interval
            if self._thread is None or not self._thread.is_alive():
                self._closed = False
                self._thread = threading.Thread(
                    target=self._run, name="archlab-heartbeat", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def remove(self, handle: RunHandle) -> None:
        with self._cond:
            self._due.pop(handle, None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._due.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    due = [h for h, at in self._due.items() if at <= now]
                    if due:
                        for handle in due:
                            self._due[handle] = now + handle._interval
                        break
                    self._cond.wait(min(self._due.values()) - now if self._due else None)
            for handle in due:
                with contextlib.suppress(Exception):  # a missed beat is retried on the next one
                    handle._beat()


class RunHandle:
    """A running run: log metrics and artifacts, then end it (or use it as a context manager).

    Metrics are buffered and written in batches by a background thread every ``heartbeat``
    seconds (with the heartbeat itself), when the buffer is large, and when the run ends; so a run
    killed with SIGKILL loses at most the last few seconds. As a context manager the run ends
    ``completed``, ``failed`` (with the error text) on an exception, or ``interrupted`` on
    KeyboardInterrupt (``archlab.runners.lifecycle`` turns SIGTERM into one).
    """

    FLUSH_ROWS = 5000

    def __init__(
        self,
        registry: Registry,
        pk: int,
        run_id: str,
        heartbeat: float = HEARTBEAT_S,
        group_pk: int | None = None,
    ) -> None:
        self.registry = registry
        self.pk = pk
        self.id = run_id
        self.group_pk = group_pk
        self._buffer: list[Point] = []
        self._steps: dict[str, int] = {}
        self._series: dict[str, SeriesSummary] = {}  # the summaries as last committed
        self._lock = threading.Lock()  # guards the buffer
        self._write_lock = threading.Lock()  # one write of this run at a time
        self._beats = True  # False once the run ends (or its heartbeat is stopped)
        self._ended = False
        self._interval = min(float(heartbeat), 5.0)
        registry._heart.add(self)

    def log_metrics(
        self, values: Mapping[str, float], step: int | None = None, epoch: float | None = None
    ) -> None:
        """Record metric values at ``step`` (default: one past the metric's last step).

        Logging a step again replaces its value; NaN is kept (it can be final, never best)."""
        if self._ended:
            raise RegistryError(f"run {self.id} has ended: it takes no more metrics")
        steps = self._steps
        for name in values:
            if name not in steps:  # a metric name seen first: one the registry can store?
                check_text(str(name), "a metric name")
        with self._lock:
            append = self._buffer.append  # under the lock: a flush swaps the buffer
            now = time.time()  # under the lock: ordered with the heartbeat a flush takes
            if step is None:
                for name, value in values.items():
                    s = steps[name] = steps.get(name, -1) + 1
                    append((str(name), s, epoch, float(value), now))
            else:
                s = int(step)
                for name, value in values.items():
                    if steps.get(name, -1) < s:
                        steps[name] = s
                    append((str(name), s, epoch, float(value), now))
            large = len(self._buffer) >= self.FLUSH_ROWS
        if large:
            self.flush()

    def log_artifact(
        self, path: str | os.PathLike[str], kind: str = "file", *, copy: bool = False
    ) -> Artifact:
        """Record a file (checkpoint, plot); files outside the artifact folder are copied in."""
        return self.registry._add_artifact(self.pk, self.id, path, kind, copy)

    def tag(self, **tags: Any) -> None:
        self.registry.tag(self.id, **tags)

    def flush(self, heartbeat: bool = True) -> None:
        """Write buffered metrics now (and the heartbeat). If the write fails, the points go back
        to the buffer for the next flush."""
        with self._write_lock:
            self._flush(heartbeat)

    def _flush(self, heartbeat: bool, finish: tuple[str, str | None] | None = None) -> None:
        with self._lock:
            # every point logged before this instant is in this batch: once it is written,
            # the heartbeat vouches for all the points logged before it
            beat = time.time()
            points, self._buffer = self._buffer, []
        try:
            self.registry._write_metrics(self, points, beat if heartbeat else None, finish)
        except BaseException:
            with self._lock:
                self._buffer[:0] = points
            raise

    def end(self, status: str = "completed", error: str | None = None) -> None:
        """End the run: write the last metrics and the status in one transaction; idempotent."""
        if self._ended:
            return
        if status not in STATUSES[1:]:
            raise RegistryError(f"a run ends completed, failed or interrupted, not {status!r}")
        error = storable_error(error)
        self._stop_heartbeat()
        with self._write_lock:
            try:
                self._flush(True, finish=(status, error))
            except Exception as exc:
                # the metrics could not be written: still end the run rather than leave it running
                with contextlib.suppress(Exception):
                    note = f"could not write the last metrics: {type(exc).__name__}: {exc}"
                    self.registry._finish(self.pk, "failed", f"{error}; {note}" if error else note)
                self._ended = True
                raise
            self._ended = True

    def _beat(self) -> None:
        """The registry's heartbeat thread calls this every ``heartbeat`` seconds."""
        with self._write_lock:
            if self._beats:
                self._flush(True)

    def _stop_heartbeat(self) -> None:
        """No more background beats (once one in progress is done)."""
        self.registry._heart.remove(self)
        with self._write_lock:
            self._beats = False

    def __enter__(self) -> RunHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc_type is None:
            self.end("completed")
        elif issubclass(exc_type, KeyboardInterrupt):
            # Ctrl-C, or a signal archlab.runners.lifecycle turned into an interruption
            reason = str(exc) or "interrupted by the user (KeyboardInterrupt)"
            self.end("interrupted", reason)
        else:
            self.end("failed", f"{exc_type.__name__}: {exc}")
