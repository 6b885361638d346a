"""``arch train --rerun RUN`` and ``arch runs verify RUN`` through the command line: a re-run
recorded and tagged, verify's exit status 0 (equal) and 1 (series differ), its JSON, and exit 2
for every kind of bad input."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from archlab.cli.main import cli
from archlab.registry import Registry

ROOT = Path(__file__).resolve().parents[2]
VIT = ROOT / "specs" / "vit-tiny-digits.json"


def trained(tmp_path: Path) -> tuple[str, str]:
    """A registry URL and a one-epoch run of the tiny ViT on 40 random 8x8 images (img.npz)."""
    x = np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "img.npz", x=x, y=np.arange(40) % 4)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    data = f"npz:{tmp_path / 'img.npz'}"
    flags = ["--epochs", "1", "--batch-size", "16", "--seed", "5", "--data", data]
    out = CliRunner().invoke(cli, ["train", str(VIT), *flags, "--json", "--registry", url])
    assert out.exit_code == 0, out.output
    return url, json.loads(out.output)["runs"][0]["id"]


def test_rerun_and_verify_from_the_command_line(tmp_path: Path) -> None:
    url, run_id = trained(tmp_path)
    runner = CliRunner()
    again = runner.invoke(cli, ["train", "--rerun", run_id, "--quiet", "--registry", url])
    assert again.exit_code == 0, again.output
    assert f"re-run of run {run_id}: run " in again.output
    with Registry(url) as registry:
        [rerun] = [r for r in registry.runs() if r.tags.get("reruns") == run_id]
    checked = runner.invoke(cli, ["runs", "verify", run_id, "--quiet", "--registry", url])
    assert checked.exit_code == 0, checked.output
    assert "equal, bit for bit" in checked.output and "samples_per_s" in checked.output
    assert "every recorded setting is the same now" in checked.output
    every = runner.invoke(
        cli, ["runs", "verify", rerun.id, "--all-settings", "--quiet", "--registry", url]
    )
    assert every.exit_code == 0 and "determinism.cudnn_deterministic" in every.output
    doc = json.loads(
        runner.invoke(cli, ["runs", "verify", run_id, "--json", "--registry", url]).output
    )
    assert doc["run"] == run_id and doc["equal"] is True
    assert {s["metric"] for s in doc["series"]} == {"train_loss", "val_loss", "val_acc", "lr"}
    assert doc["not_compared"] == ["samples_per_s"]
    assert all(row["same"] for row in doc["settings"])


def test_verify_exits_1_with_the_series_that_differ(tmp_path: Path) -> None:
    """The recorded seed of the original changed under it: the re-run draws other batches."""
    url, run_id = trained(tmp_path)
    with sqlite3.connect(tmp_path / "r.db") as db:
        db.execute(
            "UPDATE runs SET config = json_set(config, '$.init_seed', 99) WHERE id = ?", (run_id,)
        )
    out = CliRunner().invoke(cli, ["runs", "verify", run_id, "--quiet", "--registry", url])
    assert out.exit_code == 1, out.output
    assert "series differ" in out.output and "train_loss" in out.output


def test_bad_input_exits_2(tmp_path: Path) -> None:
    url, run_id = trained(tmp_path)
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        out = runner.invoke(cli, [*args, "--registry", url])
        return out.exit_code, out.output

    code, text = run("train", str(VIT), "--rerun", run_id)
    assert code == 2 and "only one" in text
    code, text = run("train", "--rerun", run_id, "--epochs", "3")
    assert code == 2 and "drop the other flags" in text
    code, text = run("runs", "verify", "nosuchrun")
    assert code == 2 and "no run 'nosuchrun'" in text
    evaluated = runner.invoke(cli, ["eval", run_id, "--json", "--registry", url])
    eval_id = json.loads(evaluated.output)["run"]
    code, text = run("runs", "verify", eval_id)
    assert code == 2 and "not a training: only train runs can be re-run" in text
    x = np.random.default_rng(9).random((40, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "img.npz", x=x, y=np.arange(40) % 4)
    with Registry(url) as registry:
        count = len(registry.runs())
    code, text = run("train", "--rerun", run_id)
    assert code == 2 and "changed since run" in text and "content hash was" in text
    with Registry(url) as registry:
        assert len(registry.runs()) == count  # nothing recorded


def test_verify_help_states_the_exit_status() -> None:
    out = CliRunner().invoke(cli, ["runs", "verify", "--help"])
    assert out.exit_code == 0
    assert "0 when every compared series is equal, 1 when any differs, 2 for bad input" in (
        " ".join(out.output.split())
    )


def test_verify_on_another_thread_count_names_it(tmp_path: Path) -> None:
    """--threads other than the recorded count: the settings list says so, whether or not the
    numbers moved (on this CPU the training loss moves in its last bits)."""
    url, run_id = trained(tmp_path)
    with Registry(url) as registry:
        recorded = int(registry.get(run_id).config["threads"])
    other = 2 if recorded == 1 else 1
    out = CliRunner().invoke(
        cli, ["runs", "verify", run_id, "--threads", str(other), "--json", "--registry", url]
    )
    assert out.exit_code in (0, 1), out.output
    doc = json.loads(out.output)
    assert doc["equal"] is (out.exit_code == 0)
    rows = {row["setting"]: row for row in doc["settings"]}
    assert (rows["threads"]["recorded"], rows["threads"]["rerun"]) == (str(recorded), str(other))
    assert rows["threads"]["same"] is False and rows["torch"]["same"] is True
