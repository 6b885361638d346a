"""``arch runs plot``: learning curves of a run or a CV group, end to end and against numpy.

The shared registry (module scope, read-only) holds:

- ``cv``: a 3-fold CV group of vit-tiny-digits, every fold completed. val_acc is logged at steps
  0-5 by folds 0 and 1 and at steps 0-3 by fold 2 (it stopped early), fold 1's step 2 is NaN;
  train_loss at every step of every fold.
- ``partial``: a 2-fold group whose fold 0 failed after logging val_acc and whose fold 1
  (completed) logged only train_loss: the group has no val_acc aggregate.
- ``single``: a run outside any group with val_acc at steps 0-4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from archlab.cli.main import cli
from archlab.registry import Registry
from archlab.registry.series import PlotSummary
from archlab.runners.curves import plot_metric
from archlab.viz.save import PlotError

ROOT = Path(__file__).parents[2]
VIT = ROOT / "specs/vit-tiny-digits.json"
STEPS = (6, 6, 4)  # val_acc points per fold of the ``cv`` group


@dataclass
class Fixture:
    url: str
    group: str
    folds: list[str]
    values: list[dict[int, float]]  # fold -> step -> val_acc as logged
    partial: str
    partial_folds: list[str]
    single: str
    single_values: list[float]


def build(url: str) -> Fixture:
    rng = np.random.default_rng(0)
    with Registry(url) as reg:
        group = reg.start_cv(VIT, k=3, seed=0)
        folds, values = [], []
        for fold, n in enumerate(STEPS):
            logged: dict[int, float] = {}
            with reg.start_run(VIT, cv_group=group, fold=fold) as run:
                for step in range(n):
                    value = float(0.5 + 0.08 * step + rng.normal(0, 0.03))
                    if fold == 1 and step == 2:
                        value = math.nan
                    logged[step] = value
                    loss = 2.0 / (step + 1)
                    run.log_metrics({"val_acc": value, "train_loss": loss}, step=step, epoch=step)
            folds.append(run.id)
            values.append(logged)

        partial = reg.start_cv(VIT, k=2)
        with pytest.raises(RuntimeError), reg.start_run(VIT, cv_group=partial, fold=0) as failed:
            failed.log_metrics({"val_acc": 0.4}, step=0)
            failed.log_metrics({"val_acc": 0.6}, step=1)
            raise RuntimeError("diverged")
        with reg.start_run(VIT, cv_group=partial, fold=1) as only_loss:
            only_loss.log_metrics({"train_loss": 1.0}, step=0)

        single_values = [0.3, 0.5, 0.6, 0.65, 0.7]
        with reg.start_run(VIT) as single:
            for step, value in enumerate(single_values):
                single.log_metrics({"val_acc": value}, step=step)
    return Fixture(
        url,
        group.id,
        folds,
        values,
        partial.id,
        [failed.id, only_loss.id],
        single.id,
        single_values,
    )


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    return build(f"sqlite:///{tmp_path_factory.mktemp('plot') / 'r.db'}")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["runs", "plot", *args])
    return result.exit_code, result.stdout, result.stderr


def ok(*args: str) -> str:
    code, out, err = invoke(*args)
    assert code == 0, (args, out, err)
    return out


def fails(*args: str, message: str) -> str:
    code, out, err = invoke(*args)
    assert code == 2, (args, code, out, err)
    assert message in err, err
    assert "Traceback" not in out + err
    return err


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def draw(reg: Fixture, ident: str, path: Path, metric: str = "val_acc") -> PlotSummary:
    with Registry(reg.url) as registry:
        return plot_metric(registry, ident, metric, path)


# ------------------------------------------------------------------------------------- the CLI


def test_help_lists_plot() -> None:
    result = CliRunner().invoke(cli, ["runs", "--help"])
    assert result.exit_code == 0 and "arch runs plot ID" in result.stdout
    out = ok("--help")
    for option in ("--registry", "--metric", "--output", "val_acc"):
        assert option in out


def test_group_png(reg: Fixture, tmp_path: Path) -> None:
    path = tmp_path / "curves.png"
    out = ok(reg.group, "--metric", "val_acc", "-o", str(path), "--registry", reg.url)
    assert str(path) in out
    assert f"CV group {reg.group} (k=3), 3 fold(s)" in out
    assert "(n=3, completed folds)" in out
    width, height = image_size(path)
    assert width > height > 200


def test_metric_defaults_to_val_acc(reg: Fixture, tmp_path: Path) -> None:
    out = ok(reg.group, "-o", str(tmp_path / "c.png"), "--registry", reg.url)
    assert "val_acc of CV group" in out


def test_a_fold_run_plots_its_group(reg: Fixture, tmp_path: Path) -> None:
    out = ok(reg.folds[1], "--output", str(tmp_path / "c.png"), "--registry", reg.url)
    assert f"run {reg.folds[1]} is a fold of CV group {reg.group}" in out
    assert "3 fold(s)" in out
    drawn = draw(reg, reg.folds[1], tmp_path / "api.png")
    assert drawn.group_id == reg.group and drawn.run_id == reg.folds[1]
    assert [c.run_id for c in drawn.curves] == reg.folds


def test_single_run(reg: Fixture, tmp_path: Path) -> None:
    path = tmp_path / "run.png"
    out = ok(reg.single, "-o", str(path), "--registry", reg.url)
    assert f"val_acc of run {reg.single}, 5 point(s), final 0.7" in out
    single_width, _ = image_size(path)
    ok(reg.group, "-o", str(tmp_path / "group.png"), "--registry", reg.url)
    assert single_width < image_size(tmp_path / "group.png")[0]  # one panel, not two

    drawn = draw(reg, reg.single, tmp_path / "api.png")
    assert drawn.group_id is None and drawn.folds == 0
    [curve] = drawn.curves
    assert curve.steps == (0, 1, 2, 3, 4) and list(curve.values) == reg.single_values
    assert drawn.mean == drawn.std == drawn.steps == ()
    assert drawn.final_mean is None


@pytest.mark.parametrize(("suffix", "magic"), [(".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_svg_and_pdf_by_suffix(reg: Fixture, tmp_path: Path, suffix: str, magic: bytes) -> None:
    path = tmp_path / f"curves{suffix.upper()}"
    ok(reg.group, "-o", str(path), "--registry", reg.url)
    assert path.read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


# ------------------------------------------------------------------------------ the numbers


def test_group_statistics_match_numpy(reg: Fixture, tmp_path: Path) -> None:
    drawn = draw(reg, reg.group, tmp_path / "c.png")
    assert drawn.folds == 3 and drawn.k == 3 and drawn.skipped == ()
    assert [c.label for c in drawn.curves] == ["fold 0", "fold 1", "fold 2"]
    for curve, logged in zip(drawn.curves, reg.values, strict=True):
        assert curve.steps == tuple(logged)
        np.testing.assert_array_equal(curve.values, list(logged.values()))  # NaN == NaN here

    # Per step: over the folds with a finite value there; sample std, 0 for a single value.
    table = np.full((3, max(STEPS)), np.nan)
    for fold, logged in enumerate(reg.values):
        for step, value in logged.items():
            table[fold, step] = value
    counts = np.sum(np.isfinite(table), axis=0)
    assert drawn.steps == tuple(range(max(STEPS)))
    assert drawn.counts == tuple(int(c) for c in counts) == (3, 3, 2, 3, 2, 2)
    np.testing.assert_allclose(drawn.mean, np.nanmean(table, axis=0), rtol=1e-12)
    np.testing.assert_allclose(drawn.std, np.nanstd(table, axis=0, ddof=1), rtol=1e-12)

    # Finals: each fold's last value; the band is the group's aggregate over completed folds.
    finals = [logged[max(logged)] for logged in reg.values]
    assert list(drawn.finals.values()) == finals
    assert drawn.final_source == "completed folds" and drawn.final_n == 3
    assert drawn.final_mean == pytest.approx(np.mean(finals), rel=1e-12)
    assert drawn.final_std == pytest.approx(np.std(finals, ddof=1), rel=1e-12)
    with Registry(reg.url) as registry:
        aggregate = registry.group(reg.group).aggregates["val_acc"]
    assert (drawn.final_mean, drawn.final_std) == (aggregate.mean, aggregate.std)
    assert drawn.to_dict()["final_n"] == 3


def test_group_with_a_fold_lacking_the_metric(reg: Fixture, tmp_path: Path) -> None:
    path = tmp_path / "partial.png"
    out = ok(reg.partial, "-o", str(path), "--registry", reg.url)
    assert f"without val_acc, not drawn: {reg.partial_folds[1]}" in out
    image_size(path)
    drawn = draw(reg, reg.partial, tmp_path / "api.png")
    [curve] = drawn.curves
    assert curve.status == "failed" and curve.values == (0.4, 0.6)
    assert drawn.skipped == (reg.partial_folds[1],)
    # No completed fold has val_acc: the band falls back to the plotted folds (one: std 0).
    assert drawn.final_source == "plotted folds"
    assert (drawn.final_mean, drawn.final_std, drawn.final_n) == (0.6, None, 1)  # one fold: no std
    assert drawn.mean == (0.4, 0.6) and drawn.std == (0.0, 0.0) and drawn.counts == (1, 1)


def test_other_metric(reg: Fixture, tmp_path: Path) -> None:
    drawn = draw(reg, reg.group, tmp_path / "loss.svg", metric="train_loss")
    assert drawn.format == "svg"
    np.testing.assert_allclose(drawn.mean, [2.0 / (s + 1) for s in range(6)])
    assert drawn.counts == (3, 3, 3, 3, 2, 2)


# ---------------------------------------------------------------------------------- errors


def test_unknown_id(reg: Fixture, tmp_path: Path) -> None:
    path = tmp_path / "c.png"
    fails("nosuchid", "-o", str(path), "--registry", reg.url, message="no run or CV group")
    assert not path.exists()


def test_unknown_metric_lists_the_known(reg: Fixture, tmp_path: Path) -> None:
    path = tmp_path / "c.png"
    err = fails(
        reg.group,
        "--metric",
        "val_acc2",
        "-o",
        str(path),
        "--registry",
        reg.url,
        message=f"no fold of CV group {reg.group} logged metric 'val_acc2'",
    )
    assert "train_loss, val_acc" in err
    err = fails(
        reg.single,
        "--metric",
        "bleu",
        "-o",
        str(path),
        "--registry",
        reg.url,
        message=f"run {reg.single} never logged metric 'bleu'",
    )
    assert "its metrics: val_acc" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["c.jpg", "c", "c.png.txt"])
def test_bad_suffix(reg: Fixture, tmp_path: Path, name: str) -> None:
    fails(
        reg.group, "-o", str(tmp_path / name), "--registry", reg.url, message=".png, .svg or .pdf"
    )
    assert list(tmp_path.iterdir()) == []


def test_missing_folder(reg: Fixture, tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "c.png"
    fails(reg.group, "-o", str(missing), "--registry", reg.url, message="does not exist")
    assert not missing.parent.exists()


def test_output_is_required(reg: Fixture) -> None:
    code, _, err = invoke(reg.group, "--registry", reg.url)
    assert code == 2 and "--output" in err


def test_api_errors(reg: Fixture, tmp_path: Path) -> None:
    with Registry(reg.url) as registry:
        with pytest.raises(PlotError, match="pdf"):
            plot_metric(registry, reg.group, "val_acc", tmp_path / "c.gif")
        with pytest.raises(PlotError, match="does not exist"):
            plot_metric(registry, reg.group, "val_acc", tmp_path / "no" / "c.png")
