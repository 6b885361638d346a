"""``arch ui``'s pages over a large registry, timed server side, against MLflow's UI search.

    python bench/ui_bench.py REGISTRY.db [--repeats 15] [--mlflow-db MLFLOW.db]
        [--mlflow-python PATH] [--no-http]

Make both databases with ``bench/registry_bench.py --groups 2000 --folds 5 --steps 5 --out DIR
--peer-python PATH`` (10,000 runs, 2,000 CV groups of 5 folds: ``DIR/registry.db`` and MLflow's
``DIR/mlflow.db``, the same runs and curves; ``--skip-peer`` makes archlab's only).

1. Each ``arch ui`` page is asked ``--repeats`` times through Starlette's TestClient after one
   warm-up (in process: no network, no browser).
2. Over HTTP on 127.0.0.1 (unless ``--no-http``): a real ``arch ui`` server, and MLflow's own
   tracking server (``mlflow server`` on the same data, its job runner off) answering the request
   its UI's runs table makes (``POST /ajax-api/2.0/mlflow/runs/search``), for the same page size
   (50) and filter; and
   in process ``MlflowClient.search_runs`` beside archlab's ``Registry.runs``. One keep-alive
   connection, one request at a time. MLflow runs in ``--mlflow-python`` (a venv with ``mlflow``;
   default: this interpreter if it imports mlflow); without one, or without ``--mlflow-db``
   (default: ``mlflow.db`` beside REGISTRY.db), its rows are skipped with the reason.

The median and the slowest are printed, in ms, with the load average. Not a test: nothing here
asserts a time. Only the standard library is imported at the top, so that MLflow's interpreter
can run this same file as its worker.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = 50
# the same query on both sides (bench/registry_bench.py's filter; params are strings in MLflow)
WHERE = "metrics.val_acc > 0.9 and config.lr = 0.001"
ORDER = "-metrics.train_loss"
MLFLOW_FILTER = "metrics.val_acc > 0.9 and params.lr = '0.001'"
MLFLOW_ORDER = "metrics.train_loss DESC"
EXPERIMENT = "registry-bench"  # the experiment bench/registry_bench.py fills


def timed(call: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median and max of ``repeats`` calls after one warm-up, in ms."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


def row(name: str, figures: tuple[float, float]) -> None:
    print(f"| {name} | {figures[0]:.1f} | {figures[1]:.1f} |", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def listening(cmd: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[None]:
    """Run a server command until it accepts connections on ``port``; stop it after."""
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            for _ in range(1200):
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[:4]} exited: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            yield
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            if proc.stderr:
                proc.stderr.close()


def requester(
    port: int, method: str, path: str, body: dict[str, Any] | None = None
) -> Callable[[], None]:
    """One request on a kept-alive connection, its answer read whole and checked (200)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}

    def call() -> None:
        conn.request(method, path, body=data, headers=headers)
        answer = conn.getresponse()
        payload = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{method} {path}: {answer.status} {payload[:300]!r}")

    return call


# ------------------------------------------------------------------------------------ archlab


def archlab_pages(url: str, repeats: int) -> None:
    from starlette.testclient import TestClient

    from archlab.registry import Registry
    from archlab.web.app import create_app

    with Registry(url, create=False, grace=None) as registry:
        total = registry.count()
        some = registry.runs(limit=1, offset=total // 2)[0].id
        groups = sorted({r.cv.group for r in registry.runs(limit=20) if r.cv is not None})[:2]
    pages = {
        "runs, grouped (first page of 50)": "/",
        "runs, one row per run": "/?group=0",
        "runs, last page": f"/?group=0&offset={total - PAGE}",
        "runs, sorted by a metric": "/?sort=-metrics.val_acc",
        "runs, filtered and sorted": "/?where=metrics.val_acc > 0.9 and config.lr < 0.001"
        "&sort=-metrics.val_loss",
        "runs JSON (50)": "/api/runs?group=0",
        "a run": f"/runs/{some}",
        "a run's series JSON": f"/api/runs/{some}/metrics",
    }
    if len(groups) == 2:
        pages.update(
            {
                "a CV group": f"/groups/{groups[0]}",
                "a CV group JSON": f"/api/groups/{groups[0]}",
                "compare two CV groups": f"/compare?ids={groups[0]}&ids={groups[1]}",
            }
        )
    pages["pictures (a page of 50 runs)"] = "/pictures"
    print(f"\n## arch ui in process (Starlette TestClient): {total:,} runs")
    print("| page | median ms | max ms |\n|---|---:|---:|")
    with TestClient(create_app(url), base_url="http://127.0.0.1") as client:
        for name, path in pages.items():
            assert client.get(path).status_code == 200, path

            def get(path: str = path) -> None:
                client.get(path)

            row(name, timed(get, repeats))


def archlab_http(url: str, repeats: int) -> None:
    """The rows MLflow's are set beside: ``arch ui`` over HTTP, ``Registry.runs`` in process."""
    from urllib.parse import urlencode

    from archlab.registry import Registry

    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])}
    cmd = [sys.executable, "-m", "archlab", "ui", "--registry", url, "--port", str(port)]
    query = urlencode({"where": WHERE, "sort": ORDER, "group": 0, "limit": PAGE})
    print(f"\n## archlab: {PAGE} runs a page, `{WHERE}` sorted by `{ORDER}`")
    print("| request | median ms | max ms |\n|---|---:|---:|")
    with Registry(url, create=False, grace=None) as registry:
        row(
            "Registry.runs, newest first (in process)",
            timed(lambda: registry.runs(limit=PAGE), repeats),
        )
        row(
            "Registry.runs, filtered and sorted (in process)",
            timed(lambda: registry.runs(where=WHERE, order_by=ORDER, limit=PAGE), repeats),
        )
    with listening(cmd, port, env):
        for name, path in [
            ("GET / (HTML, CV groups folded)", "/"),
            ("GET /api/runs, newest first", f"/api/runs?group=0&limit={PAGE}"),
            ("GET /?where=...&sort=... (HTML)", f"/?{query}"),
            ("GET /api/runs?where=...&sort=...", f"/api/runs?{query}"),
            ("GET /api/runs?sort=... (no filter)", f"/api/runs?sort={ORDER}&group=0&limit={PAGE}"),
        ]:
            row(name, timed(requester(port, "GET", path), repeats))


# ------------------------------------------------------------------------------------- mlflow


def mlflow_worker(db: str, repeats: int) -> None:
    """In MLflow's interpreter: ``search_runs`` in process, then through ``mlflow server``."""
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{db}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        raise SystemExit(f"{db} has no experiment {EXPERIMENT!r} (bench/registry_bench.py)")
    eid = experiment.experiment_id
    newest = {"order_by": ["attributes.start_time DESC"], "max_results": PAGE}
    sort = {"order_by": [MLFLOW_ORDER], "max_results": PAGE}
    filtered = {**sort, "filter_string": MLFLOW_FILTER}
    slow = max(3, repeats // 3)  # sorting every run by a metric takes seconds here
    print(f"\n## MLflow {mlflow.__version__} on the same runs ({db})")
    print("| request | median ms | max ms |\n|---|---:|---:|")
    for name, query, n in [
        ("newest first", newest, repeats),
        ("filtered and sorted", filtered, repeats),
        ("sorted by a metric", sort, slow),
    ]:
        row(
            f"MlflowClient.search_runs, {name} (in process)",
            timed(lambda q=query: client.search_runs([eid], **q), n),
        )
    port = free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    search = "/ajax-api/2.0/mlflow/runs/search"  # what the UI's runs table posts
    base = {"experiment_ids": [eid], "run_view_type": "ACTIVE_ONLY"}
    rest = {**sort, "filter": MLFLOW_FILTER}  # the REST field is "filter"
    # its job runner and queue consumers (seven processes) are of no use to a search: left off
    quiet = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with listening(cmd, port, quiet):
        for name, query, n in [
            ("newest first", newest, repeats),
            ("filtered and sorted", rest, repeats),
            ("sorted by a metric", sort, slow),
        ]:
            body = {**base, **query}
            row(
                f"POST runs/search, {name} (mlflow server)",
                timed(requester(port, "POST", search, body), n),
            )


def mlflow_rows(args: argparse.Namespace) -> None:
    db = args.mlflow_db or Path(args.db).with_name("mlflow.db")
    python = args.mlflow_python or sys.executable
    why = None
    if not Path(db).exists():
        why = f"no MLflow store at {db} (bench/registry_bench.py --peer-python PATH --out DIR)"
    elif subprocess.run([python, "-c", "import mlflow"], capture_output=True).returncode:
        why = f"{python} cannot import mlflow (give --mlflow-python, a venv with mlflow)"
    if why:
        print(f"\nMLflow skipped: {why}")
        return
    cmd = [python, __file__, "--worker-mlflow", str(db), "--repeats", str(args.repeats)]
    done = subprocess.run(cmd, timeout=1800)
    if done.returncode:
        print(f"\nMLflow's worker failed ({done.returncode})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", nargs="?")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--mlflow-db", type=Path)
    parser.add_argument("--mlflow-python")
    parser.add_argument("--no-http", action="store_true", help="only the in-process pages")
    parser.add_argument("--worker-mlflow", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_mlflow:
        mlflow_worker(args.worker_mlflow, args.repeats)
        return
    if not args.db:
        parser.error("give the registry's database file")
    url = f"sqlite:///{args.db}"
    print(f"# {args.db}; load {os.getloadavg()}")
    archlab_pages(url, args.repeats)
    if not args.no_http:
        archlab_http(url, args.repeats)
        mlflow_rows(args)
    print(f"\n# load at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
