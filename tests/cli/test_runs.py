"""``arch runs ...`` end to end: a registry built through the real API, every command and format.

The shared registry (module scope, read-only for the tests that take it) holds:

- a 3-fold CV group of vit-tiny-digits with mixup (alpha 0.2, cutmix 1.0): folds 0-2 completed
  with final acc 0.8, 0.9, 1.0 (mean 0.9, sample std 0.1) and val_loss 0.5, 0.4, 0.3;
- ``vit_a`` (lr 3e-4) and ``vit_b`` (depth 2, lr 1e-3), non-CV runs of vit with acc 0.95 / 0.85;
- ``gpt`` (lr 1e-3, loss 1.5 -> 1.25) completed and ``gpt_failed``, failed with an error.

Commands that write (gc, rm, tag) get a fresh registry of their own.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from archlab import load_spec
from archlab.cli import cli
from archlab.registry import Registry

ROOT = Path(__file__).parents[2]
VIT = ROOT / "specs/vit-tiny-digits.json"
GPT = ROOT / "specs/gpt-tiny.json"
SUBCOMMANDS = ["list", "show", "compare", "diff", "best", "export", "gc", "rm", "tag"]


@dataclass
class Fixture:
    url: str
    folds: list[str]
    group: str
    vit_a: str
    vit_b: str
    gpt: str
    gpt_failed: str


def invoke(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["runs", *args], input=input)
    return result.exit_code, result.stdout, result.stderr


def ok(*args: str, input: str | None = None) -> str:
    code, out, err = invoke(*args, input=input)
    assert code == 0, (args, out, err)
    return out


def fails(*args: str, message: str, input: str | None = None) -> str:
    """The command exits 2 with ``message`` on stderr and no traceback."""
    code, out, err = invoke(*args, input=input)
    assert code == 2, (args, code, out, err)
    assert message in err, err
    assert "Traceback" not in err + out
    return err


def build(url: str) -> Fixture:
    vit = load_spec(VIT)
    doc = json.loads(VIT.read_text())
    doc["nodes"]["encoder"]["depth"] = 2
    vit_shallow = load_spec(doc)
    gpt = load_spec(GPT)
    with Registry(url) as reg:
        group = reg.start_cv(vit, {"lr": 3e-4, "epochs": 2}, k=3, seed=0)
        folds = []
        for fold, (acc, loss) in enumerate([(0.8, 0.5), (0.9, 0.4), (1.0, 0.3)]):
            train = [i for i in range(30) if i % 3 != fold]
            val = [i for i in range(30) if i % 3 == fold]
            with reg.start_run(
                vit,
                {"lr": 3e-4, "epochs": 2},
                cv_group=group,
                fold=fold,
                train_indices=train,
                val_indices=val,
                mixup={"alpha": 0.2, "cutmix_alpha": 1.0},
                tags={"sweep": "cv"},
            ) as run:
                run.log_metrics({"acc": acc - 0.1, "val_loss": loss + 0.2}, step=0)
                run.log_metrics({"acc": acc, "val_loss": loss}, step=1)
            folds.append(run.id)
        with reg.start_run(vit, {"lr": 3e-4, "epochs": 2}, tags={"note": "base"}) as run:
            run.log_metrics({"acc": 0.95}, step=0)
        vit_a = run.id
        with reg.start_run(vit_shallow, {"lr": 1e-3, "epochs": 2}) as run:
            run.log_metrics({"acc": 0.85}, step=0)
        vit_b = run.id
        with reg.start_run(gpt, {"lr": 1e-3}) as run:
            run.log_metrics({"loss": 1.5}, step=0)
            run.log_metrics({"loss": 1.25}, step=1)
        gpt_ok = run.id
        with pytest.raises(RuntimeError), reg.start_run(gpt, {"lr": 1.0}) as run:
            run.log_metrics({"loss": 9.0}, step=0)
            raise RuntimeError("diverged")
        return Fixture(url, folds, group.id, vit_a, vit_b, gpt_ok, run.id)


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    return build(f"sqlite:///{tmp_path_factory.mktemp('registry') / 'r.db'}")


@pytest.fixture
def fresh(tmp_path: Path) -> Fixture:
    return build(f"sqlite:///{tmp_path / 'r.db'}")


def as_json(out: str) -> Any:
    return json.loads(out)


def as_csv(out: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(out)))


# ----------------------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_help(command: str | None) -> None:
    out = ok(*([command] if command else []), "--help")
    assert "Usage:" in out
    if command:
        assert "--registry" in out


# ----------------------------------------------------------------------------------------- list


def test_list_table(reg: Fixture) -> None:
    out = ok("list", "--registry", reg.url)
    header = out.splitlines()[1]
    for column in (
        "id",
        "kind",
        "status",
        "spec",
        "cv",
        "mixup",
        "acc",
        "loss",
        "started",
        "duration",
    ):
        assert column in header
    for run_id in [*reg.folds, reg.vit_a, reg.vit_b, reg.gpt, reg.gpt_failed]:
        assert run_id in out
    assert f"{reg.group}/1" in out and "0.2/1" in out  # cv group/fold, mixup alpha/cutmix
    assert "failed" in out and "vit-tiny-digits" in out and "gpt-tiny" in out


def test_list_json_and_csv(reg: Fixture) -> None:
    runs = as_json(ok("list", "--registry", reg.url, "--format", "json"))
    assert len(runs) == 7
    by_id = {r["id"]: r for r in runs}
    fold = by_id[reg.folds[1]]
    assert fold["cv"] == {
        "group": reg.group,
        "k": 3,
        "fold": 1,
        "n_train": 20,
        "n_val": 10,
        "train_sha256": fold["cv"]["train_sha256"],
        "val_sha256": fold["cv"]["val_sha256"],
    }
    assert len(fold["cv"]["val_sha256"]) == 64
    assert fold["mixup"]["alpha"] == 0.2 and fold["mixup"]["cutmix_alpha"] == 1.0
    assert fold["metrics"] == {"acc": 0.9, "val_loss": 0.4}
    assert fold["spec_name"] == "vit-tiny-digits" and len(fold["spec_hash"]) == 64
    assert fold["started"] <= fold["ended"] and fold["status"] == "completed"
    assert by_id[reg.gpt]["cv"] is None and by_id[reg.gpt]["mixup"] is None
    assert by_id[reg.gpt_failed]["error"] == "RuntimeError: diverged"
    # newest first
    assert [r["started"] for r in runs] == sorted((r["started"] for r in runs), reverse=True)

    rows = as_csv(ok("list", "--registry", reg.url, "--format", "csv"))
    assert len(rows) == 7
    row = next(r for r in rows if r["id"] == reg.folds[2])
    assert row["cv.group"] == reg.group and row["cv.fold"] == "2" and row["cv.n_val"] == "10"
    assert row["mixup.alpha"] == "0.2" and row["metrics.acc"] == "1.0"
    assert row["config.lr"] == "0.0003" and row["tags.sweep"] == "cv"
    gpt = next(r for r in rows if r["id"] == reg.gpt)
    assert gpt["metrics.loss"] == "1.25" and gpt["best.loss"] == "1.25"
    assert gpt["cv.group"] == "" and gpt["mixup.alpha"] == "" and gpt["metrics.acc"] == ""


def test_list_where_sort_limit(reg: Fixture) -> None:
    def ids(*args: str) -> list[str]:
        return [
            r["id"] for r in as_json(ok("list", "--registry", reg.url, "--format", "json", *args))
        ]

    assert set(ids("--where", "status == 'failed'")) == {reg.gpt_failed}
    assert set(ids("--where", "metrics.acc >= 0.9 and cv.k == 3")) == {reg.folds[1], reg.folds[2]}
    assert set(ids("--where", "spec.name like 'gpt%'")) == {reg.gpt, reg.gpt_failed}
    assert ids("--where", "mixup.alpha > 0.5") == []
    assert ids("--where", "metrics.acc > 0", "--sort=-metrics.acc") == [
        reg.folds[2],
        reg.vit_a,
        reg.folds[1],
        reg.vit_b,
        reg.folds[0],
    ]
    assert ids("--where", "metrics.acc > 0", "--sort", "metrics.acc", "--limit", "2") == [
        reg.folds[0],
        reg.vit_b,
    ]
    assert ids("--sort", "spec.name", "--sort", "-metrics.loss", "--limit", "2") == [
        reg.gpt_failed,
        reg.gpt,
    ]
    assert len(ids("--limit", "3")) == 3
    assert len(ids("--limit", "0")) == 7
    out = ok("list", "--registry", reg.url, "--where", "status == 'running'")
    assert "no runs match" in out
    assert "the first 3; --limit 0 lists all" in ok("list", "--registry", reg.url, "--limit", "3")
    assert "--limit 0" not in ok("list", "--registry", reg.url)


def test_list_names_the_columns_left_out(reg: Fixture) -> None:
    out = CliRunner().invoke(cli, ["runs", "list", "--registry", reg.url], env={"COLUMNS": "60"})
    assert out.exit_code == 0 and "acc" in out.stdout
    assert "not shown at 60 columns" in out.stdout and "started" in out.stdout.split("not shown")[1]
    out = ok("list", "--registry", reg.url, "--columns", "id,metrics.loss,acc")
    assert out.splitlines()[1].split() == ["┃", "id", "┃", "loss", "┃", "acc", "┃"]
    fails("list", "--registry", reg.url, "--columns", "id,val_accuracy", message="val_loss")


def test_list_grouped(reg: Fixture) -> None:
    out = ok("list", "--registry", reg.url, "--group")
    assert reg.group in out
    assert "0.9 ± 0.1" in out  # acc: mean and sample std over the three folds
    assert "0.4 ± 0.1" in out  # val_loss
    assert "3 of 3 folds" in out
    assert not any(fold in out for fold in reg.folds)
    assert reg.vit_a in out and reg.gpt in out

    entries = as_json(ok("list", "--registry", reg.url, "--group", "--format", "json"))
    assert len(entries) == 5
    [group] = [e for e in entries if e["type"] == "cv_group"]
    assert group["id"] == reg.group and group["runs"] == reg.folds
    assert group["status"] == {"completed": 3}
    assert group["aggregates"]["acc"]["mean"] == pytest.approx(0.9)
    assert group["aggregates"]["acc"]["std"] == pytest.approx(0.1)
    assert group["aggregates"]["acc"]["n"] == 3
    assert {e["id"] for e in entries if e["type"] == "run"} == {
        reg.vit_a,
        reg.vit_b,
        reg.gpt,
        reg.gpt_failed,
    }

    rows = as_csv(ok("list", "--registry", reg.url, "--group", "--format", "csv"))
    row = next(r for r in rows if r["type"] == "cv_group")
    assert float(row["metrics.acc"]) == pytest.approx(0.9)
    assert float(row["metrics.acc.std"]) == pytest.approx(0.1)

    narrowed = as_json(
        ok("list", "--registry", reg.url, "--group", "--format", "json", "--where", "cv.k == 3")
    )
    assert [e["type"] for e in narrowed] == ["cv_group"]


# ----------------------------------------------------------------------------------------- show


def test_show_fold_with_group_table(reg: Fixture) -> None:
    out = ok("show", "--registry", reg.url, reg.folds[1])
    for text in (
        reg.folds[1],
        "completed",
        "vit-tiny-digits",
        "config.lr",
        "0.0003",
        "mixup.alpha",
        "0.2",
        "tags.sweep",
        "host",
        "versions",
        "python",
        f"CV group {reg.group}",
        "this run is fold 1",
        "mean ± std (n=3)",
        "0.9 ± 0.1",
        "0.4 ± 0.1",
        "sample std",
    ):
        assert text in out, text
    assert all(fold in out for fold in reg.folds)
    # the metric summaries: acc final 0.9 at step 1, best 0.9 at step 1, 2 points
    metrics = out[out.index("metrics") :]
    assert "acc" in metrics and "val_loss" in metrics

    doc = as_json(ok("show", "--registry", reg.url, reg.folds[1], "--format", "json"))
    assert doc["id"] == reg.folds[1] and doc["status"] == "completed"
    assert doc["summaries"]["acc"]["final"] == 0.9 and doc["summaries"]["acc"]["count"] == 2
    assert doc["summaries"]["val_loss"]["best_step"] == 1
    assert doc["provenance"]["host"] and "python" in doc["provenance"]["versions"]
    group = doc["cv_group"]
    assert group["id"] == reg.group and group["k"] == 3
    assert [f["fold"] for f in group["folds"]] == [0, 1, 2]
    assert [f["n_val"] for f in group["folds"]] == [10, 10, 10]
    assert group["folds"][2]["metrics"]["acc"] == 1.0
    assert group["aggregates"]["acc"]["std"] == pytest.approx(0.1)


def test_show_failed_run(reg: Fixture) -> None:
    out = ok("show", "--registry", reg.url, reg.gpt_failed)
    assert "failed" in out and "RuntimeError: diverged" in out and "gpt-tiny" in out
    assert "CV group" not in out
    doc = as_json(ok("show", "--registry", reg.url, reg.gpt_failed, "--format", "json"))
    assert doc["error"] == "RuntimeError: diverged" and "cv_group" not in doc


# ------------------------------------------------------------------------------ compare and diff


def test_compare(reg: Fixture) -> None:
    out = ok("compare", "--registry", reg.url, reg.vit_a, reg.vit_b, reg.folds[0])
    assert all(run_id in out for run_id in (reg.vit_a, reg.vit_b, reg.folds[0]))
    assert "config.lr" in out and "config.epochs" not in out  # only what differs
    assert "metrics.acc" in out and "mixup" in out and "cv" in out
    out = ok("compare", "--registry", reg.url, reg.vit_a, reg.vit_b, "--all")
    assert "config.epochs" in out

    doc = as_json(ok("compare", "--registry", reg.url, reg.vit_a, reg.gpt, "--format", "json"))
    assert doc["runs"] == [reg.vit_a, reg.gpt]
    rows = {r["field"]: r for r in doc["rows"]}
    assert rows["spec"]["values"] == ["vit-tiny-digits", "gpt-tiny"] and rows["spec"]["differs"]
    assert rows["config.lr"]["values"] == [3e-4, 1e-3]
    assert rows["metrics.acc"]["values"] == [0.95, None]
    assert rows["metrics.loss"]["values"] == [None, 1.25]
    assert rows["kind"]["differs"] is False


def test_diff(reg: Fixture) -> None:
    out = ok("diff", "--registry", reg.url, reg.vit_a, reg.vit_b)
    assert out.splitlines() == ["spec.nodes.encoder.depth: 4 -> 2", "config.lr: 0.0003 -> 0.001"]
    doc = as_json(ok("diff", "--registry", reg.url, reg.vit_a, reg.vit_b, "--format", "json"))
    assert doc == [
        {"path": "spec.nodes.encoder.depth", "a": 4, "b": 2},
        {"path": "config.lr", "a": 3e-4, "b": 1e-3},
    ]
    assert ok("diff", "--registry", reg.url, reg.vit_a, reg.vit_a) == "no differences\n"
    assert (
        as_json(ok("diff", "--registry", reg.url, reg.vit_a, reg.vit_a, "--format", "json")) == []
    )
    # a run without mixup or CV against a fold: whole objects, config first, then mixup, then cv
    changes = as_json(
        ok("diff", "--registry", reg.url, reg.vit_a, reg.folds[0], "--format", "json")
    )
    assert [c["path"] for c in changes] == ["mixup", "cv"]
    assert changes[0]["a"] is None and changes[0]["b"]["alpha"] == 0.2
    assert changes[1]["b"]["fold"] == 0 and changes[1]["b"]["n_val"] == 10
    out = ok("diff", "--registry", reg.url, reg.folds[0], reg.folds[1])
    assert "cv.fold: 0 -> 1" in out and "cv.val_sha256: " in out and "mixup" not in out


# ----------------------------------------------------------------------------------------- best


def test_best(reg: Fixture) -> None:
    # the CV group competes with its folds' mean (0.9), not with its best fold (1.0)
    [top] = as_json(ok("best", "--registry", reg.url, "--metric", "acc", "--format", "json"))
    assert top["id"] == reg.vit_a
    [fold] = as_json(
        ok("best", "--registry", reg.url, "--metric", "acc", "--runs", "--format", "json")
    )
    assert fold["id"] == reg.folds[2]
    [group] = as_json(
        ok("best", "--registry", reg.url, "--metric", "acc", "--group", "--format", "json")
    )
    assert (group["type"], group["id"], group["aggregate"]["mean"]) == (
        "cv_group",
        reg.group,
        pytest.approx(0.9),
    )
    [low] = as_json(ok("best", "--registry", reg.url, "--metric", "loss", "--format", "json"))
    assert low["id"] == reg.gpt  # lower is better for losses
    per_spec = as_json(
        ok(
            "best",
            "--registry",
            reg.url,
            "--metric",
            "acc",
            "--group-by",
            "spec",
            "--format",
            "json",
        )
    )
    assert [r["id"] for r in per_spec] == [reg.folds[2], reg.vit_b]
    out = ok("best", "--registry", reg.url, "--metric", "acc", "--group-by", "spec")
    assert reg.folds[2] in out and reg.vit_b in out and "highest is better" in out
    [filtered] = as_json(
        ok(
            "best",
            "--registry",
            reg.url,
            "--metric",
            "acc",
            "--where",
            "cv.k == null",
            "--format",
            "json",
        )
    )
    assert filtered["id"] == reg.vit_a
    rows = as_csv(ok("best", "--registry", reg.url, "--metric", "val_loss", "--format", "csv"))
    assert [(r["type"], r["id"]) for r in rows] == [("cv_group", reg.group)]
    err = fails("best", "--registry", reg.url, "--metric", "bleu", message="metric 'bleu'")
    assert "acc, loss, val_loss" in err  # the metrics that are recorded
    fails("best", "--registry", reg.url, "--metric", "val_los", message="did you mean 'val_loss'")
    # a metric some run records, but none of those matching: not an error
    out = ok("best", "--registry", reg.url, "--metric", "loss", "--where", "cv.k == 3")
    assert "has metric 'loss'" in out


# --------------------------------------------------------------------------------------- export


def bench_runs(url: str) -> list[str]:
    """Two bench runs as ``arch bench`` records them, the first faster at every batch size."""
    from archlab.runners.benchmark import BenchReport, BenchRow, record_bench

    spec = load_spec(VIT)
    ids = []
    with Registry(url) as registry:
        for ms in (2.0, 5.0):
            rows = [
                BenchRow(batch, ms * batch, ms * batch * 0.9, ms * batch * 1.2, ms, ms * 9,
                         1000 / ms, None, 10.0 * ms, None, 10)
                for batch in (1, 8)
            ]  # fmt: skip
            report = BenchReport(
                spec, "0" * 64, "cpu", "test cpu", "float32", "infer", False, None, False, None,
                None, 1, 10, 1, 1000, 2000, [], "process RSS", {}, rows,
            )  # fmt: skip
            ids.append(record_bench(report, registry))
    return ids


def test_best_of_bench_runs_is_the_fastest_and_min_max_override(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    fast, slow = bench_runs(url)

    def best(*args: str) -> str:
        [top] = as_json(ok("best", "--registry", url, "--format", "json", *args))
        return str(top["id"])

    for metric in ("latency_ms", "latency_p90_ms", "latency_ms_b8", "peak_mem_mb"):
        assert best("--metric", metric) == fast, metric  # lower is better
        assert best("--metric", metric, "--max") == slow, metric
    assert best("--metric", "throughput") == fast  # higher is better
    assert best("--metric", "throughput", "--min") == slow
    assert best("--metric", "latency_ms", "--group-by", "spec", "--max") == slow
    out = ok("best", "--registry", url, "--metric", "latency_ms")
    assert "lowest is better" in out and fast in out
    out = ok("best", "--registry", url, "--metric", "latency_ms", "--max")
    # ranked against its direction: each run by its highest point (the largest batch's latency)
    assert "highest is better" in out and "highest, step 8" in out and "40" in out
    fails(
        "best", "--registry", url, "--metric", "latency_ms", "--min", "--max",
        message="--min and --max: give one of them",
    )  # fmt: skip


def test_export(reg: Fixture, tmp_path: Path) -> None:
    target = tmp_path / "runs.json"
    out = ok("export", "--registry", reg.url, "--format", "json", "-o", str(target))
    assert "exported 7 run(s)" in out
    runs = json.loads(target.read_text())
    assert len(runs) == 7 and {"id", "cv", "mixup", "metrics", "config"} <= set(runs[0])

    target = tmp_path / "runs.csv"
    out = ok("export", "--registry", reg.url, "-o", str(target), "--where", "cv.k == 3")
    assert "exported 3 run(s)" in out
    rows = as_csv(target.read_text())
    assert sorted(r["id"] for r in rows) == sorted(reg.folds)
    assert {r["metrics.acc"] for r in rows} == {"0.8", "0.9", "1.0"}

    rows = as_csv(ok("export", "--registry", reg.url, "--format", "csv", "-o", "-"))
    assert len(rows) == 7
    out = ok("export", "--registry", reg.url, "-o", "-", "--format", "csv", "--where", "id == 'x'")
    assert out.startswith("id,kind,status,") and len(out.splitlines()) == 1
    assert (
        ok("export", "--registry", reg.url, "-o", "-", "--format", "json", "--where", "id == 'x'")
        == "[]\n"
    )
    fails("export", "--registry", reg.url, "-o", str(tmp_path / "runs.txt"), message="--format")
    fails(
        "export",
        "--registry",
        reg.url,
        "--format",
        "csv",
        "-o",
        str(tmp_path / "missing" / "x.csv"),
        message="does not exist",
    )


# ---------------------------------------------------------------------------- gc, rm and tag


def _age_heartbeat(url: str, run_id: str, seconds: float) -> None:
    from sqlalchemy import text

    with Registry(url, grace=math.inf) as registry, registry.engine.begin() as conn:
        conn.execute(
            text("UPDATE runs SET heartbeat = heartbeat - :s WHERE id = :id"),
            {"s": seconds, "id": run_id},
        )


@pytest.fixture
def stale_run(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A running run whose heartbeat is an hour old (its heartbeat thread stopped)."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with Registry(url) as registry:
        handle = registry.start_run(load_spec(GPT), {"lr": 1e-3})
        handle.log_metrics({"loss": 2.0}, step=0)
        handle.flush()
        handle._stop_heartbeat()  # the process "died": no more heartbeats
        _age_heartbeat(url, handle.id, 3600)
        yield url, handle.id
        handle.end()


def test_gc_stale(stale_run: tuple[str, str]) -> None:
    url, run_id = stale_run
    out = ok("gc", "--registry", url, "--stale", "--grace", "2h")
    assert "no running run" in out
    with Registry(url, grace=math.inf) as registry:  # (any other command marks it at 5 min)
        assert registry.get(run_id).status == "running"
    out = ok("gc", "--registry", url, "--stale", "--grace", "30m")
    assert (
        f"marked 1 run(s) interrupted (silent for over 30m00s, or their process is gone on this host): {run_id}"
        in out
    )
    doc = as_json(ok("show", "--registry", url, run_id, "--format", "json"))
    assert doc["status"] == "interrupted" and "no heartbeat" in doc["error"]
    assert doc["metrics"] == {"loss": 2.0}  # nothing recorded is lost
    assert "no running run" in ok("gc", "--registry", url, "--stale", "--grace", "0")


def test_rm_running_needs_force(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with Registry(url) as registry:
        handle = registry.start_run(load_spec(GPT))
        fails("rm", "--registry", url, handle.id, "--yes", message="still running")
        with Registry(url) as check:
            assert check.get(handle.id).status == "running"
        handle._stop_heartbeat()  # the process stops without ending: its run is about to vanish
        assert "removed 1 run(s)" in ok("rm", "--registry", url, handle.id, "--yes", "--force")


@pytest.mark.parametrize("grace", ["5x", "-1m", "m", "1.5.h"])
def test_gc_bad_duration(grace: str, tmp_path: Path) -> None:
    fails(
        "gc",
        "--registry",
        f"sqlite:///{tmp_path}/r.db",
        "--stale",
        "--grace",
        grace,
        message="duration",
    )


def test_gc_needs_stale(tmp_path: Path) -> None:
    fails("gc", "--registry", f"sqlite:///{tmp_path}/r.db", message="--stale")


def test_rm(fresh: Fixture) -> None:
    code, out, _ = invoke("rm", "--registry", fresh.url, fresh.gpt, input="n\n")
    assert code == 1 and fresh.gpt in out
    assert (
        as_json(ok("show", "--registry", fresh.url, fresh.gpt, "--format", "json"))["id"]
        == fresh.gpt
    )

    out = ok("rm", "--registry", fresh.url, fresh.gpt, input="y\n")
    assert "removed 1 run(s)" in out
    fails("show", "--registry", fresh.url, fresh.gpt, message=f"no run or CV group {fresh.gpt!r}")

    # removing a fold recomputes its group's aggregates
    ok("rm", "--registry", fresh.url, fresh.folds[2], "--yes")
    doc = as_json(ok("show", "--registry", fresh.url, fresh.folds[0], "--format", "json"))
    assert doc["cv_group"]["aggregates"]["acc"]["n"] == 2
    assert doc["cv_group"]["aggregates"]["acc"]["mean"] == pytest.approx(0.85)

    # an unknown id among known ones removes nothing
    fails("rm", "--registry", fresh.url, fresh.vit_a, "nosuchid", "--yes", message="'nosuchid' in")
    assert len(as_json(ok("list", "--registry", fresh.url, "--format", "json"))) == 5


def test_tag(fresh: Fixture) -> None:
    out = ok("tag", "--registry", fresh.url, fresh.vit_a, "note=best so far", "seed=3", "eq=a=b")
    assert f"tagged {fresh.vit_a}" in out
    doc = as_json(ok("show", "--registry", fresh.url, fresh.vit_a, "--format", "json"))
    assert doc["tags"] == {"note": "best so far", "seed": "3", "eq": "a=b"}
    [found] = as_json(
        ok("list", "--registry", fresh.url, "--format", "json", "--where", "tags.seed == 3")
    )
    assert found["id"] == fresh.vit_a
    # a bad pair writes nothing, not even the good pairs before it
    fails("tag", "--registry", fresh.url, fresh.vit_a, "x=1", "oops", message="KEY=VALUE")
    fails("tag", "--registry", fresh.url, fresh.vit_a, "=1", message="KEY=VALUE")
    doc = as_json(ok("show", "--registry", fresh.url, fresh.vit_a, "--format", "json"))
    assert "x" not in doc["tags"]
    fails(
        "tag", "--registry", fresh.url, "nosuchid", "a=1", message="no run or CV group 'nosuchid'"
    )


# --------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "args",
    [
        ["show", "nosuchid"],
        ["compare", "nosuchid", "other"],
        ["diff", "nosuchid", "other"],
        ["rm", "nosuchid", "--yes"],
        ["tag", "nosuchid", "a=b"],
    ],
)
def test_unknown_run_exits_2(reg: Fixture, args: list[str]) -> None:
    fails(*args, "--registry", reg.url, message="'nosuchid' in this registry")


def test_similar_ids_are_suggested(reg: Fixture) -> None:
    typo = reg.gpt[:4] + "zzzz"
    err = fails("show", "--registry", reg.url, typo, message="similar:")
    assert reg.gpt in err


@pytest.mark.parametrize(
    "args",
    [
        ["list", "--where", "metrics.acc >"],
        ["list", "--where", "bogus == 1"],
        ["list", "--where", "status == 'completed' and"],
        ["list", "--sort", "nosuchfield"],
        ["list", "--group", "--where", "(status == 'x'"],
        ["best", "--metric", "acc", "--where", "acc > 1"],
        ["export", "--format", "json", "-o", "-", "--where", "1 = 1"],
    ],
)
def test_bad_query_exits_2(reg: Fixture, args: list[str]) -> None:
    err = fails(*args, "--registry", reg.url, message="error:")
    assert "^" in err or "field" in err


def test_unreachable_registry_exits_2(tmp_path: Path) -> None:
    for command in (["list"], ["show", "abc"], ["best", "--metric", "acc"], ["gc", "--stale"]):
        fails(
            *command,
            "--registry",
            "postgresql://nobody@127.0.0.1:1/x",
            message="cannot open the registry at postgresql://nobody@127.0.0.1:1/x",
        )
        fails(
            *command, "--registry", f"sqlite:///{tmp_path}/missing/r.db", message="does not exist"
        )
    garbage = tmp_path / "garbage.db"
    garbage.write_text("not a database " * 100)
    fails("list", "--registry", f"sqlite:///{garbage}", message="cannot open the registry")
    assert garbage.read_text() == "not a database " * 100
    fails("list", "--registry", "nosuchdialect://x/y", message="")


def test_default_registry_from_environment(
    reg: Fixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCHLAB_REGISTRY", reg.url)
    assert len(as_json(ok("list", "--format", "json"))) == 7
    monkeypatch.delenv("ARCHLAB_REGISTRY")
    monkeypatch.chdir(tmp_path)
    # nothing found: read-only commands name the registry they looked for and create nothing
    err = fails("list", message="no registry at sqlite:///")
    assert "user-level" in err
    assert list(tmp_path.iterdir()) == []


READ_ONLY = [
    ["list"],
    ["list", "--group"],
    ["show", "abcdefgh"],
    ["compare", "abcdefgh", "bcdefghj"],
    ["diff", "abcdefgh", "bcdefghj"],
    ["best", "--metric", "acc"],
    ["export", "-o", "-", "--format", "csv"],
    ["gc", "--stale"],
    ["rm", "abcdefgh", "--yes"],
    ["tag", "abcdefgh", "a=b"],
]


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: " ".join(a[:2]))
def test_runs_commands_never_create_a_registry(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No registry found (no --registry, no $ARCHLAB_REGISTRY, no .archlab/ above, no user-level
    registry): exit 2 naming the registry looked for, and nothing created anywhere; a mistyped
    --registry file is not created either."""
    monkeypatch.delenv("ARCHLAB_REGISTRY", raising=False)
    monkeypatch.chdir(tmp_path)
    user = Path(os.environ["XDG_DATA_HOME"])
    err = fails(*args, message="no registry at sqlite:///")
    assert str(user / "archlab" / "registry.db") in err and "user-level" in err
    fails(*args, "--registry", "typo.db", message=f"{tmp_path / 'typo.db'} (given)")
    assert list(tmp_path.iterdir()) == [] and list(user.iterdir()) == []


def test_runs_commands_find_the_project_registry_walking_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty registry found in a parent folder is read, and an empty listing says which one."""
    monkeypatch.delenv("ARCHLAB_REGISTRY", raising=False)
    (tmp_path / ".archlab").mkdir()
    url = f"sqlite:///{tmp_path / '.archlab' / 'registry.db'}"
    Registry(url).close()
    (tmp_path / "sub" / "dir").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "sub" / "dir")
    out = ok("list")
    assert f"no runs in registry {url} (found in {tmp_path / '.archlab'}" in out
    assert "no runs in registry" in ok("list", "--group")
    assert f"in registry {url}" in ok("best", "--metric", "acc")
    with Registry(url) as registry, registry.start_run(load_spec(GPT)) as run:
        run.log_metrics({"loss": 1.0}, step=0)
    assert run.id in ok("list")


def test_compare_needs_two_runs(reg: Fixture) -> None:
    fails("compare", "--registry", reg.url, reg.gpt, message="at least two")


def test_nan_metrics_print_and_stay_valid_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    config = {"clip": float("inf"), "floor": float("-inf"), "warmup": float("nan"), "lr": None}
    with Registry(url) as registry, registry.start_run(load_spec(GPT), config=config) as run:
        run.log_metrics({"loss": float("nan"), "acc": float("inf")}, step=0)
    assert "nan" in ok("show", "--registry", url, run.id)
    out = ok("show", "--registry", url, run.id, "--format", "json")
    assert "NaN" not in out and "Infinity" not in out  # strict JSON: no such literals
    # one policy (archlab.jsonpolicy) for metrics and stored configs alike: NaN and the
    # infinities are strings, null stays "no value"
    doc = json.loads(out)
    assert doc["metrics"] == {"loss": "nan", "acc": "inf"}
    assert doc["config"] == {"clip": "inf", "floor": "-inf", "warmup": "nan", "lr": None}
    [row] = as_csv(ok("list", "--registry", url, "--format", "csv"))
    assert (row["metrics.loss"], row["metrics.acc"], row["config.clip"]) == ("nan", "inf", "inf")
    assert "NaN" not in ok("export", "--registry", url, "--format", "json", "-o", "-")
    assert "nan" in ok("list", "--registry", url)


# ------------------------------------------------------------------------- issue 11: ids, rm, gc


def test_group_ids_work_where_run_ids_do(fresh: Fixture, tmp_path: Path) -> None:
    url, group = fresh.url, fresh.group
    doc = as_json(ok("show", "--registry", url, group, "--format", "json"))
    assert doc["type"] == "cv_group" and doc["id"] == group
    assert [f["id"] for f in doc["folds"]] == fresh.folds
    out = ok("show", "--registry", url, group)
    assert f"CV group {group}" in out and all(f in out for f in fresh.folds)
    assert "this run" not in out
    doc = as_json(ok("compare", "--registry", url, group, "--format", "json"))
    assert doc["runs"] == fresh.folds
    rows = as_csv(ok("export", "--registry", url, group, fresh.gpt, "-o", "-", "--format", "csv"))
    assert [r["id"] for r in rows] == [*fresh.folds, fresh.gpt]
    assert "folds of CV group" in ok("tag", "--registry", url, group, "phase=cv")
    tagged = as_json(
        ok("list", "--registry", url, "--format", "json", "--where", "tags.phase == 'cv'")
    )
    assert sorted(r["id"] for r in tagged) == sorted(fresh.folds)
    fails("show", "--registry", url, "zzzzzzzz", message="no run or CV group 'zzzzzzzz'")
    out = ok("rm", "--registry", url, group, "--yes")
    assert "removed 3 run(s) and CV group(s) " + group in out
    fails("show", "--registry", url, group, message="no run or CV group")
    assert len(as_json(ok("list", "--registry", url, "--format", "json"))) == 4


def test_rm_deletes_artifacts_and_warns_about_dangling_teachers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    (tmp_path / "w.bin").write_bytes(b"w")
    vit = load_spec(VIT)
    with Registry(url) as registry:
        with registry.start_run(vit) as teacher:
            teacher.log_artifact(tmp_path / "w.bin", "checkpoint")
        with registry.start_run(vit, {"teacher": teacher.id, "teacher_run": teacher.id}) as student:
            pass
        folder = registry.artifacts / teacher.id
    assert folder.is_dir()
    err = fails("rm", "--registry", url, teacher.id, "--yes", message=f"run {student.id} (teacher")
    assert "--force" in err and folder.is_dir()
    out = ok("rm", "--registry", url, teacher.id, "--yes", "--force")
    assert f"will dangle: run {student.id} (teacher {teacher.id})" in out
    assert "deleted 1 artifact folder(s) or file(s)" in out
    assert not folder.exists() and (tmp_path / "w.bin").is_file()
    assert student.id in ok("list", "--registry", url)


def test_gc_artifacts_reclaims_orphan_folders(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    (tmp_path / "w.bin").write_bytes(b"w" * 2048)
    with Registry(url) as registry:
        for _ in range(2):
            with registry.start_run(load_spec(GPT)) as run:
                run.log_artifact(tmp_path / "w.bin")
        registry.remove(run.id, files=False)  # an older archlab's rm: the files stayed
        root = registry.artifacts
    code, out, _ = invoke("gc", "--registry", url, "--artifacts", input="n\n")
    assert code == 1 and str(root / run.id) in out
    assert (root / run.id).is_dir()  # declined
    out = ok("gc", "--registry", url, "--artifacts", "--yes")
    assert (
        f"{root / run.id}  2.0 KiB" in out and "deleted 1 orphan artifact folder(s), 2.0 KiB" in out
    )
    assert not (root / run.id).exists() and len(list(root.iterdir())) == 1
    assert "no orphan artifact folders" in ok("gc", "--registry", url, "--artifacts")


def test_gc_stale_says_what_it_marked(tmp_path: Path) -> None:
    """A run whose process is gone on this host is marked by gc itself, which says so (opening
    the registry used to mark it first, and gc then printed "no running run")."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    gone = subprocess.Popen(["true"])  # a pid that no longer runs
    gone.wait()
    with Registry(url) as registry:
        handle = registry.start_run(load_spec(GPT))
        handle._stop_heartbeat()
    import sqlite3

    db = sqlite3.connect(tmp_path / "r.db")
    with db:
        db.execute("UPDATE runs SET pid = ? WHERE id = ?", (gone.pid, handle.id))
    db.close()
    out = ok("gc", "--registry", url, "--stale")
    assert "marked 1 run(s) interrupted" in out and handle.id in out


def test_exports_write_iso_8601_times(reg: Fixture) -> None:
    from datetime import datetime

    for fmt in ("csv", "json"):
        out = ok("export", "--registry", reg.url, "-o", "-", "--format", fmt)
        rows = as_csv(out) if fmt == "csv" else as_json(out)
        for row in rows:
            started = datetime.fromisoformat(row["started"])
            ended = datetime.fromisoformat(row["ended"])
            assert started.tzinfo is not None and started <= ended
            assert row["started"].endswith("+00:00")


def test_hostile_limits_and_text_exit_2(fresh: Fixture) -> None:
    fails("list", "--registry", fresh.url, "--limit", str(2**64), message="limit")
    fails(
        "list", "--registry", fresh.url, "--where", f"config.seed == {2**64}",
        message="integer out of range",
    )  # fmt: skip
    fails("tag", "--registry", fresh.url, fresh.gpt, "note=a\x00b", message="NUL character")
    assert as_json(ok("show", "--registry", fresh.url, fresh.gpt, "--format", "json"))["tags"] == {}


def test_a_registry_missing_a_table_exits_2(fresh: Fixture) -> None:
    import sqlite3

    db = sqlite3.connect(fresh.url.removeprefix("sqlite:///"))
    with db:
        db.execute("DROP TABLE run_tags")
    db.close()
    fails("list", "--registry", fresh.url, message="lacks the table(s) run_tags")
