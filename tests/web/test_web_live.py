"""A running run's page: it asks the curves to poll (``data-live="1"``), and the metrics endpoint
it polls shows each new point as soon as the run has written it, then the run's end."""

from __future__ import annotations

import json
from pathlib import Path

from starlette.testclient import TestClient
from web_testing import LOOPBACK, VIT

from archlab.registry import Registry
from archlab.web.app import create_app


def test_a_running_run_is_polled_until_it_ends(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    spec = json.loads(VIT.read_text())
    with (
        Registry(url, artifacts=tmp_path / "artifacts") as registry,
        registry.start_run(spec, {"epochs": 3}) as run,
    ):
        run.log_metrics({"val_loss": 1.0}, step=1)
        run.flush()
        with TestClient(create_app(url), base_url=LOOPBACK) as client:
            page = client.get(f"/runs/{run.id}").text
            assert 'data-live="1"' in page and 'id="run-status">running' in page
            first = client.get(f"/api/runs/{run.id}/metrics").json()
            assert first["status"] == "running" and first["metrics"]["val_loss"]["step"] == [1]
            run.log_metrics({"val_loss": 0.5}, step=2)
            run.flush()
            second = client.get(f"/api/runs/{run.id}/metrics").json()
            assert second["metrics"]["val_loss"]["value"] == [1.0, 0.5]
            run.end()
            done = client.get(f"/api/runs/{run.id}/metrics").json()
            assert done["status"] == "completed"
            assert 'data-live="0"' in client.get(f"/runs/{run.id}").text


def test_the_curves_script_polls_only_while_running_and_marks_its_charts() -> None:
    """What the browser tests rely on, checked where no browser runs: the script draws one chart
    per family with ``data-series``, and polls every 2 s only while a run is running."""
    script = (Path(__file__).parents[2] / "src/archlab/web/static/curves.js").read_text()
    assert 'setAttribute("data-series"' in script and "2000" in script
    assert 'd.status === "running"' in script and 'getAttribute("data-live") === "1"' in script
