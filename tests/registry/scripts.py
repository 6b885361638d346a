"""Registry writers run in their own interpreter by the reliability tests (``run_script``).

    python scripts.py write URL SPEC WORKER RUNS STEPS   # ready, waits for a line, writes, done
    python scripts.py kill-me URL SPEC HEARTBEAT         # logs a step every 10 ms until killed
    python scripts.py sigterm URL SPEC                   # runs inside ``with`` until SIGTERM
    python scripts.py open URL                           # ready, waits for a line, opens, opened
    python scripts.py folds URL SPEC GROUP FOLD...       # ready, waits for a line, runs the folds
    python scripts.py no-torch URL SPEC ARTIFACTS        # the whole API, then: torch imported?

Lines on stdout are the protocol: ``ready``, ``run ID``, ``step N TIME``, ``done ...``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def say(*words: object) -> None:
    print(*words, flush=True)


def write(url: str, spec: str, worker: str, runs: str, steps: str) -> None:
    """RUNS runs of STEPS steps (two metrics each), flushed every 10 steps, after a barrier."""
    from archlab.registry import Registry

    with Registry(url) as reg:
        say("ready")
        sys.stdin.readline()  # the barrier: every writer starts at once
        for i in range(int(runs)):
            with reg.start_run(
                spec, {"worker": int(worker), "i": i}, tags={"worker": worker}
            ) as run:
                for step in range(int(steps)):
                    run.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 100}, step=step)
                    if step % 10 == 9:
                        run.flush()
        say("done", worker)


def kill_me(url: str, spec: str, heartbeat: str) -> None:
    from archlab.registry import Registry

    reg = Registry(url)
    run = reg.start_run(spec, {"doomed": True}, heartbeat=float(heartbeat))
    say("run", run.id)
    step = 0
    while True:
        run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        say("step", step, repr(time.time()))
        step += 1
        time.sleep(0.01)


def sigterm(url: str, spec: str) -> None:
    from archlab.registry import Registry
    from archlab.runners.lifecycle import check, interruptible  # signals -> Interrupted

    with interruptible(), Registry(url) as reg, reg.start_run(spec, heartbeat=0.2) as run:
        say("run", run.id)
        step = 0
        while True:
            check()  # a safe point: a signal is raised here as Interrupted
            run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
            step += 1
            time.sleep(0.01)


def open_registry(url: str) -> None:
    from archlab.registry import Registry

    say("ready")
    sys.stdin.readline()
    Registry(url).close()
    say("opened")


def folds(url: str, spec: str, group: str, *folds: str) -> None:
    """Fold runs of one CV group that all end at about the same time as other processes'."""
    from archlab.registry import Registry

    with Registry(url) as reg:
        runs = [reg.start_run(spec, cv_group=group, fold=int(f)) for f in folds]
        for run, fold in zip(runs, folds, strict=True):
            run.log_metrics({"val_acc": 0.5 + int(fold) / 100}, step=0)
            run.flush()
        say("ready")
        sys.stdin.readline()
        for run in runs:
            run.end()
        say("done")


def no_torch(url: str, spec: str, artifacts: str) -> None:
    import archlab
    from archlab.registry import Registry

    Path("plot.txt").write_text("a plot")
    with Registry(url, artifacts=artifacts) as reg:
        group = reg.start_cv(spec, {"epochs": 1}, k=2, seed=0)
        for fold in range(2):
            with reg.start_run(
                spec,
                {"lr": 0.1},
                cv_group=group,
                fold=fold,
                train_indices=[0, 1] if fold else [2, 3],
                val_indices=[2, 3] if fold else [0, 1],
                mixup={"alpha": 0.2},
                tags={"t": 1},
            ) as run:
                run.log_metrics({"val_acc": 0.5 + fold / 10}, step=0)
                run.log_artifact("plot.txt", "plot")
        reg.get(run.id)
        reg.group(group.id)
        reg.diff(run.id, run.id)
        reg.metric_history(run.id, "val_acc")
        reg.mark_stale(1.0)
        reg.tag(run.id, done="yes")
    _ = archlab.Registry  # the lazy attribute too
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "sklearn"))
    say(json.dumps(heavy))


MODES = {
    "write": write,
    "kill-me": kill_me,
    "sigterm": sigterm,
    "open": open_registry,
    "folds": folds,
    "no-torch": no_torch,
}

if __name__ == "__main__":
    MODES[sys.argv[1]](*sys.argv[2:])
