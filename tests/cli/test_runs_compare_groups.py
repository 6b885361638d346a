"""``arch runs compare GROUP_A GROUP_B``: two CV groups tested fold for fold, as JSON with exactly
the documented keys and as a table with words; groups that do not pair, unknown ids, a missing
metric and statistics options on runs exit 2. Groups are recorded through the API with the
fingerprints of the same splits, and trained for real by ``arch train`` (a 5x2 CV of the tiny
ViT on 300 digits images; the full digits data set in a slow test)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_digits
from sklearn.model_selection import RepeatedKFold

from archlab import load_spec, stats
from archlab.cli import cli
from archlab.registry import Registry

ROOT = Path(__file__).parents[2]
VIT = ROOT / "specs/vit-tiny-digits.json"
KEYS = [
    "metric", "k", "repeats", "diffs", "mean_diff", "t", "p", "ci_low", "ci_high", "t_naive",
    "p_naive", "p_a_better", "p_rope", "p_b_better",
]  # fmt: skip
FIVE_BY_TWO = ["t_5x2cv", "p_5x2cv", "f_5x2cv", "p_f_5x2cv"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["runs", *args])
    return result.exit_code, result.stdout, result.stderr


def ok(*args: str) -> str:
    code, out, err = invoke(*args)
    assert code == 0, (args, out, err)
    return out


def fails(*args: str, message: str) -> str:
    code, out, err = invoke(*args)
    assert code == 2, (args, code, out, err)
    assert message in err, err
    assert "Traceback" not in err + out
    return err


def record(reg: Registry, spec: Any, finals: list[float], k: int, repeats: int, seed: int) -> str:
    config = {"lr": 1e-3, "data_sha256": "d" * 64}
    group = reg.start_cv(spec, config, k=k, repeats=repeats, seed=seed)
    folds = RepeatedKFold(n_splits=k, n_repeats=repeats, random_state=seed).split(np.arange(40))
    for fold, (train, val) in enumerate(folds):
        with reg.start_run(
            spec, config, cv_group=group, fold=fold, train_indices=train.tolist(),
            val_indices=val.tolist(),
        ) as run:  # fmt: skip
            run.log_metrics({"val_acc": finals[fold], "val_loss": 1 - finals[fold]}, step=0)
    return group.id


@pytest.fixture(scope="module")
def groups(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A registry with 3-fold groups a, b (B ahead by about 0.05) and c (another CV seed), and
    5x2 groups d, e; ``run`` is one fold run of a."""
    url = f"sqlite:///{tmp_path_factory.mktemp('compare') / 'r.db'}"
    vit = load_spec(VIT)
    doc = json.loads(VIT.read_text())
    doc["nodes"]["encoder"]["depth"] = 2
    deeper = load_spec(doc)
    rng = np.random.default_rng(5)
    base = rng.uniform(0.7, 0.8, 10)
    with Registry(url) as reg:
        a = record(reg, vit, [0.70, 0.75, 0.72], 3, 1, 0)
        b = record(reg, deeper, [0.76, 0.79, 0.78], 3, 1, 0)
        c = record(reg, deeper, [0.76, 0.79, 0.78], 3, 1, 1)
        d = record(reg, vit, base.tolist(), 2, 5, 0)
        e = record(reg, deeper, (base + rng.normal(0.01, 0.01, 10)).tolist(), 2, 5, 0)
        run = reg.group(a).runs[0]
    return {"url": url, "a": a, "b": b, "c": c, "d": d, "e": e, "run": run}


def test_json_has_exactly_the_documented_keys_and_the_registrys_numbers(
    groups: dict[str, str],
) -> None:
    url, a, b = groups["url"], groups["a"], groups["b"]
    doc = json.loads(ok("compare", "--registry", url, a, b, "--json"))
    assert list(doc) == KEYS
    assert (doc["metric"], doc["k"], doc["repeats"]) == ("val_acc", 3, 1)
    assert doc["diffs"] == pytest.approx([0.06, 0.04, 0.06])
    test = stats.corrected_ttest(doc["diffs"], 0.5)
    assert (doc["t"], doc["p"], doc["ci_low"], doc["ci_high"]) == pytest.approx(
        (test.t, test.p, test.ci_low, test.ci_high), abs=1e-12
    )
    posterior = stats.correlated_bayes(doc["diffs"], 0.5, 0.01)
    assert (doc["p_a_better"], doc["p_rope"], doc["p_b_better"]) == pytest.approx(
        (posterior.p_below, posterior.p_rope, posterior.p_above), abs=1e-12
    )
    with Registry(url) as reg:
        assert doc == json.loads(json.dumps(reg.compare_groups(a, b).to_dict()))
    # the options reach the library call
    loss = json.loads(
        ok("compare", "--registry", url, a, b, "--metric", "val_loss", "--at", "best",
           "--rope", "0", "--ratio", "sizes", "--format", "json")
    )  # fmt: skip
    assert loss["metric"] == "val_loss" and loss["p_rope"] == 0.0
    assert loss["p_b_better"] > 0.9  # B's loss is lower: B is better, as for val_acc
    five = json.loads(ok("compare", "--registry", url, groups["d"], groups["e"], "--json"))
    assert list(five) == KEYS + FIVE_BY_TWO and (five["k"], five["repeats"]) == (2, 5)
    assert five["t_5x2cv"] == pytest.approx(stats.five_by_two(five["diffs"]).t, abs=1e-12)


def test_the_table_says_what_the_numbers_mean(groups: dict[str, str]) -> None:
    out = ok("compare", "--registry", groups["url"], groups["a"], groups["b"])
    assert "B is better than A by 0.05333 in final val_acc" in out
    assert "corrected resampled t-test" in out and "significant at 0.05" in out
    assert "naive paired t-test" in out and "for comparison only" in out
    assert "P(A better)" in out and "P(B better)" in out and "ROPE ±0.01" in out
    five = ok("compare", "--registry", groups["url"], groups["d"], groups["e"])
    assert "Dietterich" in five and "Alpaydin" in five
    # --runs: the folds side by side, as before
    table = ok("compare", "--registry", groups["url"], groups["a"], groups["b"], "--runs")
    assert "P(A better)" not in table and groups["run"] in table


def test_bad_input_exits_2(groups: dict[str, str]) -> None:
    url, a, b, c = groups["url"], groups["a"], groups["b"], groups["c"]
    fails("compare", "--registry", url, a, c, message=r"CV seed 0 (A) vs 1 (B)")
    fails("compare", "--registry", url, a, groups["d"], message="do not pair fold for fold")
    fails("compare", "--registry", url, a, "zzzzzzzz", message="no run or CV group 'zzzzzzzz'")
    fails("compare", "--registry", url, a, "zzzzzzzz", "--metric", "val_acc",
          message="B: no CV group 'zzzzzzzz'")  # fmt: skip
    fails("compare", "--registry", url, a, b, "--metric", "val_f1",
          message="no metric 'val_f1'; metrics recorded: val_acc, val_loss")  # fmt: skip
    fails("compare", "--registry", url, groups["run"], b, "--rope", "0.02",
          message="is a run, not a CV group")  # fmt: skip
    fails("compare", "--registry", url, a, b, "--rope", "-1", message="ROPE half-width")
    fails("compare", "--registry", url, a, b, "--rope", "nan", message="ROPE half-width")
    fails("compare", "--registry", url, a, b, "--at", "last", message="'last' is not one of")
    fails("compare", "--registry", url, a, b, c, "--metric", "val_acc",
          message="--metric: options of comparing two CV groups")  # fmt: skip
    fails("compare", "--registry", url, a, b, "--runs", "--ratio", "sizes",
          message="--ratio: options of comparing two CV groups")  # fmt: skip
    fails("compare", "--registry", url, a, a, message="not " + a + " with itself")


def digits_npz(path: Path, n: int = 300) -> str:
    """The first ``n`` digits images as an ``npz:`` source (1 x 8 x 8, scaled to [0, 1])."""
    data = load_digits()
    x = (data.images[:n] / 16.0).astype(np.float32)[:, None]
    np.savez(path, x=x, y=data.target[:n])
    return f"npz:{path}"


def train_group(url: str, *args: str) -> str:
    result = CliRunner().invoke(
        cli, ["train", str(VIT), "--registry", url, "--epochs", "1", "--quiet", *args]
    )
    assert result.exit_code == 0, result.output
    with Registry(url) as reg:
        return max(reg.runs(), key=lambda r: r.started).cv.group  # type: ignore[union-attr]


def test_two_trained_groups_compare(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    data = digits_npz(tmp_path / "digits.npz", n=120)
    a = train_group(url, "--data", data, "--folds", "2", "--lr", "0.001")
    b = train_group(url, "--data", data, "--folds", "2", "--lr", "0.01")
    doc = json.loads(ok("compare", "--registry", url, a, b, "--json", "--ratio", "sizes"))
    assert list(doc) == KEYS and (doc["k"], doc["repeats"]) == (2, 1)
    with Registry(url) as reg:
        runs_a, runs_b = reg.fold_runs(a), reg.fold_runs(b)
        finals = [runs_b[j].metrics["val_acc"] - runs_a[j].metrics["val_acc"] for j in (0, 1)]
        n = [(r.cv.n_val, r.cv.n_train) for r in runs_a.values() if r.cv is not None]
    assert doc["diffs"] == pytest.approx(finals, abs=1e-12)
    ratio = (n[0][0] + n[1][0]) / (n[0][1] + n[1][1])  # 60 / 60
    assert doc["t"] == pytest.approx(stats.corrected_ttest(doc["diffs"], ratio).t, abs=1e-12)
    out = ok("compare", "--registry", url, a, b)
    assert "corrected resampled t-test" in out and "df 1" in out


@pytest.mark.slow
def test_two_trained_5x2_groups_compare(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    data = digits_npz(tmp_path / "digits.npz")
    split = ["--data", data, "--folds", "2", "--repeats", "5", "--batch-size", "32"]
    a = train_group(url, *split, "--lr", "0.001")
    b = train_group(url, *split, "--lr", "0.01")
    doc = json.loads(ok("compare", "--registry", url, a, b, "--json"))
    assert list(doc) == KEYS + FIVE_BY_TWO and (doc["k"], doc["repeats"]) == (2, 5)
    with Registry(url) as reg:
        finals_a = [reg.fold_runs(a)[j].metrics["val_acc"] for j in range(10)]
        finals_b = [reg.fold_runs(b)[j].metrics["val_acc"] for j in range(10)]
    assert doc["diffs"] == pytest.approx(np.subtract(finals_b, finals_a).tolist(), abs=1e-12)
    assert all(math.isfinite(doc[k]) for k in ("t", "p", "p_a_better", "p_b_better"))
    # another CV seed splits otherwise: refused, naming the first fold
    c = train_group(url, "--data", data, "--folds", "2", "--cv-seed", "1")
    fails("compare", "--registry", url, a, c, message="do not pair fold for fold")


@pytest.mark.slow
def test_two_digits_groups_trained_by_arch_train_compare(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    a = train_group(url, "--folds", "2")
    b = train_group(url, "--folds", "2", "--lr", "0.003", "--mixup", "0.2")
    out = ok("compare", "--registry", url, a, b)
    assert "corrected resampled t-test" in out and "df 1" in out
    doc = json.loads(ok("compare", "--registry", url, a, b, "--json", "--ratio", "sizes"))
    assert list(doc) == KEYS and (doc["k"], doc["repeats"]) == (2, 1)


def test_help_loads_no_scipy() -> None:
    # scipy (archlab.stats) loads with the first comparison, not with the CLI
    code = (
        "import sys\nfrom archlab.cli import cli\nsys.argv = ['arch', 'runs', 'compare', '--help']\n"
        "try:\n    cli(prog_name='arch')\nexcept SystemExit as e:\n    assert e.code in (0, None)\n"
        "assert 'scipy' not in sys.modules, 'scipy loaded'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "--rope R" in done.stdout
