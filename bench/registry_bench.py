"""The experiment registry at scale, against MLflow's own SQLite tracking store.

    python bench/registry_bench.py [--groups 2000] [--folds 5] [--steps 50] [--metrics 4]
        [--repeats 20] [--out DIR] [--skip-peer | --peer-python PATH] [--peer-groups N]
        [--reuse] [--profile] [--archlab-src SRC]

``--reuse`` queries the databases an earlier run left in ``--out`` (same sizes) instead of filling
them again; ``--profile`` writes a cProfile of archlab's ingest there; ``--archlab-src`` imports
archlab from another source tree (to measure a prototype of the store side by side).

The workload of the registry issue: ``--groups`` CV groups of ``--folds`` fold runs each (2,000 x 5
= 10,000 runs by default), each logging ``--steps`` steps of ``--metrics`` metrics (50 x 4: two
million metric rows), written through the public API as a training loop would (``start_cv``;
``start_run`` with ``cv_group``, ``fold``, ``mixup`` and a config with lr/epochs/seed, used as a
context manager; ``log_metrics`` once per step). Ten variants of ``specs/vit-tiny-digits.json``
(depth x width) are loaded once with ``archlab.load_spec``; mixup is on in half the groups.
The data are synthetic learning curves, the same on both sides (seeded, stdlib only).

Reported: ingest (metric rows/s over the time spent in the registry's calls: each group's synthetic
curves are made before its timed section, on both sides) and the median latency, after
warm-up, of: a listing of 20 runs filtered on a metric (and on a metric and a parameter) and sorted
by another metric; ``best(metric, group_by="spec")``; a CV group's aggregates (random groups); one
run's history of one metric (random runs).

The MLflow peer runs in its own interpreter (``--peer-python``, a venv with ``mlflow`` or
``mlflow-skinny``; default: this interpreter when it can import mlflow): the same data go into
``MlflowClient(tracking_uri="sqlite:///...")`` (its SqlAlchemyStore), one parent run per CV group
with nested fold runs, metrics with ``log_batch`` (at most 1,000 per call), and the equivalent
queries: ``search_runs`` with the same filters and order, ``max_results=20``; the best run of each
spec (one ``search_runs`` per spec ordered by the metric, ``max_results=1``); a group's aggregates
(``search_runs`` on the parent's children, mean and std in Python); ``get_metric_history``.
Ratios are ``mlflow time / archlab time`` (above 1: archlab is faster).

Each side runs in a subprocess with a time limit (``--timeout``, ``--peer-timeout``), one after the
other, never together. The script only imports the standard library at the top so that the peer
interpreter can run this same file as its worker (``--worker mlflow``).

Not a test: nothing here asserts a time. Results go to bench/RESULTS.md by hand, with the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASE_SPEC = ROOT / "specs" / "vit-tiny-digits.json"
DEPTHS = (2, 3, 4, 6, 8)
DIMS = (64, 128)
LRS = (1e-3, 5e-4, 3e-4, 1e-4)
CORE_METRICS = ("train_loss", "val_loss", "train_acc", "val_acc")

# The queries, in the registry's where-language and in MLflow's filter syntax. The thresholds keep
# a sizeable fraction of the runs (printed with the results).
ACC_THRESHOLD = 0.9
WHERE_METRIC = f"metrics.val_acc > {ACC_THRESHOLD}"
WHERE_METRIC_PARAM = f"metrics.val_acc > {ACC_THRESHOLD} and config.lr = 0.001"
ORDER = "-metrics.train_loss"
MLFLOW_METRIC = f"metrics.val_acc > {ACC_THRESHOLD}"
MLFLOW_METRIC_PARAM = f"metrics.val_acc > {ACC_THRESHOLD} and params.lr = '0.001'"
MLFLOW_ORDER = "metrics.train_loss DESC"


# ------------------------------------------------------------------------------- the workload


def metric_names(count: int) -> list[str]:
    extra = [f"aux_{i}" for i in range(max(0, count - len(CORE_METRICS)))]
    return [*CORE_METRICS[:count], *extra]


def group_setting(g: int, steps: int = 50) -> dict[str, Any]:
    """The spec variant, config and mixup of CV group ``g`` (its folds share them)."""
    variant = g % (len(DEPTHS) * len(DIMS))
    return {
        "variant": variant,
        "depth": DEPTHS[variant % len(DEPTHS)],
        "dim": DIMS[variant // len(DEPTHS)],
        "config": {"lr": LRS[(g // 10) % len(LRS)], "epochs": steps, "seed": g, "batch_size": 128},
        "mixup": {"alpha": 0.2, "cutmix_alpha": 1.0, "label_smoothing": 0.1} if g % 2 else None,
    }


def curves(g: int, fold: int, steps: int, names: list[str]) -> Iterator[dict[str, float]]:
    """One run's metrics, step by step: noisy saturating learning curves.

    The final validation accuracy spreads over about 0.8-0.99 with the depth, width, lr and
    mixup of the group, so ``val_acc > 0.9`` keeps roughly half of the runs.
    """
    setting = group_setting(g, steps)
    rng = random.Random(g * 1009 + fold)
    quality = (
        0.865
        + 0.02 * DEPTHS.index(setting["depth"])
        + 0.03 * DIMS.index(setting["dim"])
        - 0.015 * LRS.index(setting["config"]["lr"])
        + (0.02 if setting["mixup"] else 0.0)
        + rng.gauss(0, 0.03)
    )
    final_acc = min(0.985, max(0.5, quality))
    tau = steps / 5
    for s in range(steps):
        progress = 1 - math.exp(-(s + 1) / tau)
        val_acc = min(0.999, 0.1 + (final_acc - 0.1) * progress + rng.gauss(0, 0.005))
        train_acc = min(0.999, val_acc + 0.01 * progress + abs(rng.gauss(0, 0.005)))
        val_loss = max(0.01, 2.3 * (1 - progress) + (1 - final_acc) * 1.5 + rng.gauss(0, 0.02))
        train_loss = max(0.01, val_loss * 0.9 + rng.gauss(0, 0.02))
        values = {
            "train_loss": train_loss,
            "val_loss": val_loss,
            "train_acc": train_acc,
            "val_acc": val_acc,
        }
        yield {n: values[n] if n in values else rng.random() for n in names}


def group_curves(g: int, folds: int, steps: int, names: list[str]) -> list[list[dict[str, float]]]:
    """The metrics of every fold of group ``g``, made before the group's timed section: ingest
    times the registry's work, not this generator's."""
    return [list(curves(g, fold, steps, names)) for fold in range(folds)]


def spec_document(variant: int) -> dict[str, Any]:
    doc = json.loads(BASE_SPEC.read_text())
    doc["name"] = (
        f"vit-tiny-digits-d{DEPTHS[variant % len(DEPTHS)]}-w{DIMS[variant // len(DEPTHS)]}"
    )
    doc["nodes"]["encoder"]["depth"] = DEPTHS[variant % len(DEPTHS)]
    doc["nodes"]["patches"]["dim"] = DIMS[variant // len(DEPTHS)]
    return doc


# ---------------------------------------------------------------------------------- timing


def median_ms(
    fn: Callable[[], Any], repeats: int, warmup: int = 2, budget_s: float = 60.0, minimum: int = 5
) -> dict[str, Any]:
    """Median of ``repeats`` timed calls after ``warmup``; stops early (after ``minimum`` calls)
    when the calls together pass ``budget_s``. Returns the median, spread and count."""
    for _ in range(warmup):
        fn()
    times = []
    spent = 0.0
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
        if spent > budget_s and i + 1 >= minimum:
            break
    times.sort()
    return {
        "median_ms": statistics.median(times) * 1e3,
        "p10_ms": times[len(times) // 10] * 1e3,
        "p90_ms": times[min(len(times) - 1, (9 * len(times)) // 10)] * 1e3,
        "n": len(times),
    }


def ingest_record(args: Any, n_metrics: int, seconds: float, load_before: Any) -> dict[str, Any]:
    """The ingest figures both sides report: runs, metric rows, rows per second, load."""
    runs = args.groups * args.folds
    rows = runs * args.steps * n_metrics
    return {
        "runs": runs,
        "metric_rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "ms_per_run": seconds / runs * 1e3,
        "load_before": load_before,
        "load_after": loadavg(),
    }


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def fresh(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal", ".lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def db_bytes(path: Path) -> int:
    return sum(
        Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists()
    )


# ---------------------------------------------------------------------------------- archlab


def archlab_worker(args: argparse.Namespace) -> dict[str, Any]:
    import archlab
    from archlab.registry import Registry

    out = Path(args.out)
    db = out / "registry.db"
    names = metric_names(args.metrics)
    result: dict[str, Any] = {
        "side": "archlab",
        "versions": versions(["sqlalchemy", "alembic", "archlab"]),
        "sqlite": sqlite_version(),
        "archlab_path": str(Path(archlab.__file__).parent),
        "sources_sha256": sources_sha256(Path(archlab.__file__).parent / "registry"),
    }
    meta = out / "registry.ingest.json"
    shape = [args.groups, args.folds, args.steps, args.metrics]
    if (
        args.reuse
        and db.exists()
        and meta.exists()
        and json.loads(meta.read_text())["shape"] == shape
    ):
        result["ingest"] = json.loads(meta.read_text())["ingest"]
        result["ingest"]["reused"] = True
    else:
        fresh(db)
        specs = [archlab.load_spec(spec_document(v)) for v in range(len(DEPTHS) * len(DIMS))]
        registry = Registry(f"sqlite:///{db}", artifacts=out / "artifacts")
        load_before = loadavg()
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        seconds = 0.0
        for g in range(args.groups):
            setting = group_setting(g, args.steps)
            spec = specs[setting["variant"]]
            series = group_curves(g, args.folds, args.steps, names)  # the workload: not timed
            start = time.perf_counter()
            group = registry.start_cv(spec, setting["config"], k=args.folds, seed=g)
            for fold in range(args.folds):
                with registry.start_run(
                    spec,
                    setting["config"],
                    cv_group=group,
                    fold=fold,
                    mixup=setting["mixup"],
                ) as run:
                    for step, values in enumerate(series[fold]):
                        run.log_metrics(values, step=step, epoch=step)
            seconds += time.perf_counter() - start
        if profiler is not None:
            import pstats

            profiler.disable()
            profiler.dump_stats(out / "archlab_ingest.prof")
            with open(out / "archlab_ingest_profile.txt", "w") as f:
                pstats.Stats(profiler, stream=f).sort_stats("cumulative").print_stats(60)
        result["ingest"] = ingest_record(args, len(names), seconds, load_before)
        result["ingest"].update(groups=args.groups, profiled=bool(args.profile))
        registry.close()
        meta.write_text(json.dumps({"shape": shape, "ingest": result["ingest"]}))
    result["db_bytes"] = db_bytes(db)

    registry = Registry(f"sqlite:///{db}", artifacts=out / "artifacts")
    rng = random.Random(1)
    with registry.session() as session:
        from sqlalchemy import text

        group_ids = [r[0] for r in session.execute(text("SELECT id FROM cv_groups"))]
        run_ids = [r[0] for r in session.execute(text("SELECT id FROM runs"))]
        matching = session.execute(
            text(
                "SELECT count(*) FROM metric_summaries s JOIN metric_keys k ON k.id = s.key_id "
                "WHERE k.name = 'val_acc' AND s.last_value > :t"
            ),
            {"t": ACC_THRESHOLD},
        ).scalar()
    result["filter_keeps"] = (matching or 0) / max(1, len(run_ids))
    queries: dict[str, Any] = {}
    checks: dict[str, Any] = {}

    def attempt(name: str, fn: Callable[[], Any], check: Callable[[Any], Any]) -> None:
        try:
            checks[name] = check(fn())
            queries[name] = median_ms(fn, args.repeats, budget_s=args.query_budget)
        except Exception as exc:  # the where-language may not exist yet: report, go on
            queries[name] = {"error": f"{type(exc).__name__}: {exc}"}

    attempt(
        "list_metric",
        lambda: registry.runs(where=WHERE_METRIC, order_by=ORDER, limit=20),
        lambda runs: {"n": len(runs), "first": runs[0].metrics.get("train_loss") if runs else None},
    )
    attempt(
        "list_metric_param",
        lambda: registry.runs(where=WHERE_METRIC_PARAM, order_by=ORDER, limit=20),
        lambda runs: {"n": len(runs), "first": runs[0].metrics.get("train_loss") if runs else None},
    )
    attempt(
        "best_by_spec",
        lambda: registry.best("val_acc", group_by="spec"),
        lambda runs: {
            "n": len(runs),
            "best": [round(r.summaries["val_acc"].best, 4) for r in runs],
        },
    )
    attempt(
        "group_aggregates",
        lambda: registry.group(rng.choice(group_ids)).aggregates,
        lambda aggs: {"metrics": sorted(aggs), "n": [a.n for a in aggs.values()][:1]},
    )
    attempt(
        "metric_history",
        lambda: registry.metric_history(rng.choice(run_ids), "val_loss"),
        lambda points: {"points": len(points)},
    )
    registry.close()
    result["queries"] = queries
    result["checks"] = checks
    result["load_end"] = loadavg()
    return result


# ----------------------------------------------------------------------------------- mlflow


def mlflow_worker(args: argparse.Namespace) -> dict[str, Any]:
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_TRACKING_URI", "")
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    out = Path(args.out)
    db = out / "mlflow.db"
    names = metric_names(args.metrics)
    uri = f"sqlite:///{db}"
    result: dict[str, Any] = {
        "side": "mlflow",
        "versions": versions(["mlflow", "mlflow-skinny", "sqlalchemy", "alembic"]),
        "mlflow": mlflow.__version__,
        "sqlite": sqlite_version(),
    }
    meta = out / "mlflow.ingest.json"
    shape = [args.groups, args.folds, args.steps, args.metrics]
    if (
        args.reuse
        and db.exists()
        and meta.exists()
        and json.loads(meta.read_text())["shape"] == shape
    ):
        saved = json.loads(meta.read_text())
        result["ingest"] = {**saved["ingest"], "reused": True}
        client = MlflowClient(tracking_uri=uri)
        experiment = saved["experiment"]
        parents = saved["parents"]
        children = saved["children"]
        specs_of = saved["specs"]
    else:
        fresh(db)
        client = MlflowClient(tracking_uri=uri)  # creates the schema (not timed)
        experiment = client.create_experiment("registry-bench")
        parents, children, specs_of = [], [], []
        load_before = loadavg()
        seconds = 0.0
        for g in range(args.groups):
            setting = group_setting(g, args.steps)
            spec_name = spec_document(setting["variant"])["name"]
            series = group_curves(g, args.folds, args.steps, names)  # the workload: not timed
            start = time.perf_counter()
            mixup = setting["mixup"]
            params = [
                Param("spec", spec_name),
                Param("depth", str(setting["depth"])),
                Param("dim", str(setting["dim"])),
                *(Param(k, str(v)) for k, v in setting["config"].items()),
                Param("mixup", "true" if mixup else "false"),
                *(Param(f"mixup_{k}", str(v)) for k, v in (mixup or {}).items()),
            ]
            parent = client.create_run(experiment, run_name=f"cv-{g}", tags={"cv": "5-fold"})
            pid = parent.info.run_id
            client.log_batch(pid, params=[*params, Param("k", str(args.folds))])
            for fold in range(args.folds):
                run = client.create_run(
                    experiment,
                    run_name=f"cv-{g}-fold-{fold}",
                    tags={"mlflow.parentRunId": pid},
                )
                rid = run.info.run_id
                client.log_batch(rid, params=[*params, Param("fold", str(fold))])
                batch: list[Any] = []
                for step, values in enumerate(series[fold]):
                    now = int(time.time() * 1000)
                    batch.extend(Metric(n, v, now, step) for n, v in values.items())
                    if len(batch) >= 1000:
                        client.log_batch(rid, metrics=batch[:1000])
                        batch = batch[1000:]
                if batch:
                    client.log_batch(rid, metrics=batch)
                client.set_terminated(rid)
                children.append(rid)
            client.set_terminated(pid)
            seconds += time.perf_counter() - start
            parents.append(pid)
            specs_of.append(spec_name)
        result["ingest"] = ingest_record(args, len(names), seconds, load_before)
        result["ingest"]["parent_runs"] = args.groups
        meta.write_text(
            json.dumps(
                {
                    "shape": shape,
                    "ingest": result["ingest"],
                    "experiment": experiment,
                    "parents": parents,
                    "children": children,
                    "specs": specs_of,
                }
            )
        )
    result["db_bytes"] = db_bytes(db)
    rng = random.Random(1)
    spec_names = sorted(set(specs_of))
    queries: dict[str, Any] = {}
    checks: dict[str, Any] = {}

    def attempt(name: str, fn: Callable[[], Any], check: Callable[[Any], Any]) -> None:
        try:
            checks[name] = check(fn())
            queries[name] = median_ms(fn, args.repeats, budget_s=args.query_budget)
        except Exception as exc:
            queries[name] = {"error": f"{type(exc).__name__}: {exc}"}

    def listing(filter_string: str) -> Callable[[], Any]:
        return lambda: client.search_runs(
            [experiment], filter_string=filter_string, order_by=[MLFLOW_ORDER], max_results=20
        )

    def best_by_spec() -> list[Any]:
        # What a user does without group-by: one search per spec, best first, keep the first.
        best = []
        for name in spec_names:
            found = client.search_runs(
                [experiment],
                filter_string=f"params.spec = '{name}' and metrics.val_acc > -1",
                order_by=["metrics.val_acc DESC"],
                max_results=1,
            )
            best.extend(found[:1])
        return best

    def aggregates() -> dict[str, tuple[float, float, int]]:
        # MLflow keeps no CV aggregates: search the parent's children, mean and std by hand.
        parent = rng.choice(parents)
        folds = client.search_runs(
            [experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=1000
        )
        out: dict[str, tuple[float, float, int]] = {}
        for name in names:
            xs = [r.data.metrics[name] for r in folds if name in r.data.metrics]
            if xs:
                out[name] = (
                    statistics.fmean(xs),
                    statistics.stdev(xs) if len(xs) > 1 else 0.0,
                    len(xs),
                )
        return out

    attempt(
        "list_metric",
        listing(MLFLOW_METRIC),
        lambda runs: {
            "n": len(runs),
            "first": runs[0].data.metrics.get("train_loss") if runs else None,
        },
    )
    attempt(
        "list_metric_param",
        listing(MLFLOW_METRIC_PARAM),
        lambda runs: {
            "n": len(runs),
            "first": runs[0].data.metrics.get("train_loss") if runs else None,
        },
    )
    attempt(
        "best_by_spec",
        best_by_spec,
        lambda runs: {"n": len(runs), "best": [round(r.data.metrics["val_acc"], 4) for r in runs]},
    )
    attempt(
        "group_aggregates",
        aggregates,
        lambda aggs: {"metrics": sorted(aggs), "n": [a[2] for a in aggs.values()][:1]},
    )
    attempt(
        "metric_history",
        lambda: client.get_metric_history(rng.choice(children), "val_loss"),
        lambda points: {"points": len(points)},
    )
    result["queries"] = queries
    result["checks"] = checks
    result["load_end"] = loadavg()
    return result


# ------------------------------------------------------------------------------ orchestration


def versions(dists: list[str]) -> dict[str, str | None]:
    from importlib import metadata

    found: dict[str, str | None] = {"python": platform.python_version()}
    for dist in dists:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found


def sources_sha256(folder: Path) -> dict[str, str]:
    """Short hashes of the registry sources measured (they change while the store is worked on)."""
    import hashlib

    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:12] for p in sorted(folder.glob("*.py"))
    }


def sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def run_worker(
    python: str, side: str, args: argparse.Namespace, groups: int, timeout: float
) -> dict[str, Any]:
    """Run one side in its own interpreter with a time limit; its JSON result or the error."""
    out = Path(args.out)
    result_file = out / f"{side}.result.json"
    result_file.unlink(missing_ok=True)
    command = [
        python,
        str(Path(__file__).resolve()),
        "--worker",
        side,
        "--groups",
        str(groups),
        "--folds",
        str(args.folds),
        "--steps",
        str(args.steps),
        "--metrics",
        str(args.metrics),
        "--repeats",
        str(args.repeats),
        "--query-budget",
        str(args.query_budget),
        "--out",
        str(out),
        "--result",
        str(result_file),
    ]
    if args.reuse:
        command.append("--reuse")
    if args.profile and side == "archlab":
        command.append("--profile")
    env = dict(os.environ)
    if side == "archlab" and args.archlab_src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.archlab_src, env.get("PYTHONPATH")]))
    print(f"# {side}: {groups} groups x {args.folds} folds, limit {timeout:.0f} s", file=sys.stderr)
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, timeout=timeout, env=env, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return {"side": side, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0 or not result_file.exists():
        tail = (proc.stderr or "")[-2000:]
        return {"side": side, "error": f"exit {proc.returncode}: {tail}"}
    result = json.loads(result_file.read_text())
    result["process_s"] = time.perf_counter() - start
    return result


def peer_python(args: argparse.Namespace) -> str | None:
    if args.skip_peer:
        return None
    if args.peer_python:
        return args.peer_python
    probe = subprocess.run([sys.executable, "-c", "import mlflow"], capture_output=True)
    return sys.executable if probe.returncode == 0 else None


LABELS = {
    "list_metric": "20 runs, `val_acc > 0.9`, sorted by `train_loss`",
    "list_metric_param": "20 runs, `val_acc > 0.9` and `lr = 0.001`, sorted by `train_loss`",
    "best_by_spec": '`best("val_acc", group_by="spec")` (10 specs)',
    "group_aggregates": "a CV group's aggregates (random group)",
    "metric_history": "one run's `val_loss` history ({steps} points)",
}


def fmt_ms(q: dict[str, Any] | None) -> str:
    if not q:
        return "-"
    if "error" in q:
        return "error"
    return f"{q['median_ms']:.2f}" if q["median_ms"] < 10 else f"{q['median_ms']:.1f}"


def table(ours: dict[str, Any], peer: dict[str, Any] | None, steps: int) -> str:
    lines = []
    ing = ours.get("ingest", {})
    peer_ing = (peer or {}).get("ingest", {})
    same_size = bool(peer_ing) and peer_ing.get("metric_rows") == ing.get("metric_rows")
    head = "| operation | archlab | MLflow | ratio (MLflow/archlab) |\n|---|---:|---:|---:|"
    lines.append(head)
    if ing:
        mine = f"{ing['rows_per_s']:,.0f} rows/s ({ing['seconds']:.0f} s)"
        theirs = (
            f"{peer_ing['rows_per_s']:,.0f} rows/s ({peer_ing['seconds']:.0f} s)"
            if peer_ing
            else "-"
        )
        ratio = f"{ing['rows_per_s'] / peer_ing['rows_per_s']:.1f}x" if peer_ing else "-"
        lines.append(
            f"| ingest, {ing['metric_rows']:,} metric rows | {mine} | {theirs} | {ratio} |"
        )
    for name, label in LABELS.items():
        q = ours.get("queries", {}).get(name)
        p = (peer or {}).get("queries", {}).get(name)
        ratio = "-"
        if q and p and "error" not in q and "error" not in p and same_size:
            ratio = f"{p['median_ms'] / q['median_ms']:.0f}x"
        lines.append(f"| {label.format(steps=steps)}, ms | {fmt_ms(q)} | {fmt_ms(p)} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--groups", type=int, default=2000)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--metrics", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per query")
    parser.add_argument(
        "--query-budget", type=float, default=60.0, help="seconds per query before stopping early"
    )
    parser.add_argument("--out", type=Path, help="folder for the databases and JSON results")
    parser.add_argument("--skip-peer", action="store_true", help="archlab only")
    parser.add_argument("--peer-python", help="an interpreter that can import mlflow")
    parser.add_argument("--peer-groups", type=int, help="a smaller size for the MLflow side")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for archlab's side")
    parser.add_argument("--peer-timeout", type=float, default=1500.0, help="seconds for MLflow's")
    parser.add_argument("--reuse", action="store_true", help="query databases already filled")
    parser.add_argument("--profile", action="store_true", help="cProfile archlab's ingest")
    parser.add_argument("--archlab-src", help="import archlab from this src folder (prototypes)")
    parser.add_argument("--worker", choices=["archlab", "mlflow"], help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    args.out.mkdir(parents=True, exist_ok=True)

    if args.worker:
        worker = archlab_worker if args.worker == "archlab" else mlflow_worker
        result = worker(args)
        args.result.write_text(json.dumps(result, indent=2))
        return

    print(
        f"# {args.groups} CV groups x {args.folds} folds = {args.groups * args.folds:,} runs, "
        f"{args.steps} steps x {args.metrics} metrics; python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load {loadavg()}; out {args.out}",
        file=sys.stderr,
    )
    ours = run_worker(sys.executable, "archlab", args, args.groups, args.timeout)
    peer = None
    python = peer_python(args)
    if python is None and not args.skip_peer:
        print("# mlflow is not importable: peer skipped (--peer-python PATH)", file=sys.stderr)
    if python is not None:
        groups = args.peer_groups or args.groups
        peer = run_worker(python, "mlflow", args, groups, args.peer_timeout)
    for side in (ours, peer):
        if side and "error" in side:
            print(f"# {side['side']} failed: {side['error']}", file=sys.stderr)
    print(table(ours, peer, args.steps))
    if peer and peer.get("ingest", {}).get("metric_rows") != ours.get("ingest", {}).get(
        "metric_rows"
    ):
        print("\n(MLflow ran at another size: query ratios left out; compare with anchors.md.)")
    for side in (ours, peer):
        if side is None:
            continue
        for name, q in (side.get("queries") or {}).items():
            if "n" in q and q["n"] < args.repeats:
                print(f"({side['side']} {name}: {q['n']} timed calls, cut by --query-budget)")
    for side in (ours, peer):
        if side and "checks" in side:
            print(f"\n{side['side']}: {json.dumps(side['checks'])}", file=sys.stderr)
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "archlab": ours, "mlflow": peer}
    (args.out / "results.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
