"""Many machines: three ``arch sweep`` processes share one study on a PostgreSQL registry, one is
SIGKILLed midway, its trial is found by its heartbeat, retried, and the study ends with exactly
the trials asked for. Needs ``ARCHLAB_TEST_POSTGRES`` (a server URL; skipped when unset)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, make_url, text

pytest.importorskip("optuna")

VIT = Path(__file__).parents[2] / "specs/vit-tiny-digits.json"
TRIALS = 6


@pytest.fixture
def server_url() -> Iterator[str]:
    """A fresh database of its own on the ``ARCHLAB_TEST_POSTGRES`` server, dropped afterwards."""
    base = os.environ.get("ARCHLAB_TEST_POSTGRES")
    if not base:
        pytest.skip("ARCHLAB_TEST_POSTGRES is unset or empty: PostgreSQL tests skipped")
    admin_url = make_url(base).set(drivername="postgresql+psycopg")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"archlab_sweep_{os.getpid()}_{secrets.token_hex(3)}"
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def _study_states(url: str) -> list[str]:
    from archlab.errors import UserInputError
    from archlab.registry import Registry
    from archlab.runners.sweep import sweep_trials

    with Registry(url, artifacts="/nonexistent", grace=None) as registry:
        try:
            return [t.state for t in sweep_trials(registry, "shared")[1]]
        except UserInputError:
            return []


@pytest.mark.slow
def test_three_workers_one_killed_finish_exactly_the_trials(
    tmp_path: Path, server_url: str
) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((90, 1, 8, 8), dtype=np.float32), y=np.arange(90) % 3)
    sweep = tmp_path / "shared.json"
    sweep.write_text(
        json.dumps(
            {
                "base": str(VIT),
                "space": {
                    "nodes.encoder.depth": {"int": [1, 2]},
                    "train.lr": {"log": [1e-4, 1e-2]},
                },
                "train": {"data": f"npz:{tmp_path / 'd.npz'}", "folds": 2, "epochs": 2},
                "pruner": "none",
                "trials": TRIALS,
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHLAB_")}
    env["ARCHLAB_ARTIFACTS"] = str(tmp_path / "artifacts")
    command = [sys.executable, "-m", "archlab", "sweep", str(sweep), "--study", "shared"]
    command += ["--registry", server_url, "--heartbeat", "1", "--threads", "1", "--json"]

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            command,
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    victim = start()
    deadline = time.monotonic() + 120
    while "RUNNING" not in _study_states(server_url):  # the victim is inside its first trial
        assert victim.poll() is None and time.monotonic() < deadline, victim.communicate()
        time.sleep(0.2)
    others = [start(), start()]
    time.sleep(1.0)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()  # closes its pipes
    outputs = [p.communicate(timeout=400) for p in others]
    assert all(p.returncode == 0 for p in others), outputs
    states = _study_states(server_url)
    assert states.count("COMPLETE") == TRIALS, states
    assert "RUNNING" not in states and "WAITING" not in states
    failed = states.count("FAIL")
    assert failed >= 1  # the victim's trial, marked by its heartbeat (and surplus races, if any)
    shown = json.loads(outputs[0][0])["trials"]
    victims = [t for t in shown if t["state"] == "FAIL" and t["reason"] == "failed or died"]
    assert len(victims) == 1
    retried = [t for t in shown if t["state"] == "COMPLETE" and t["params"] == victims[0]["params"]]
    assert retried, (victims, shown)  # retried with the same parameters
    complete = {t["group"] for t in shown if t["state"] == "COMPLETE"}
    assert len(complete) == TRIALS
    from archlab.registry import Registry
    from archlab.runners.sweep import pareto_front

    with Registry(server_url, artifacts=tmp_path / "artifacts", grace=None) as registry:
        groups = {p.group for p in pareto_front(registry, "shared", {"val_acc": "max"})}
        # the victim's group is complete only if it was killed between its last fold and the tell
        assert complete <= groups and len(groups) <= TRIALS + 1
        killed = [r for r in registry.runs() if r.status == "running"]
        assert not killed  # the victim's fold run was found dead and marked
