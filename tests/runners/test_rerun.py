"""``arch train --rerun`` as a function: what a training records for it, a re-run that repeats
every metric series bit for bit (a fold of a CV group, with mixup), the comparison itself, and
every kind of bad input refused before anything is recorded."""

from __future__ import annotations

import math
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from archlab.registry import Registry
from archlab.registry.provenance import installed_packages
from archlab.runners.config import TrainConfig
from archlab.runners.reproducibility import CHANGES_KIND, applied, determinism_settings
from archlab.runners.rerun import NEEDED, compare_series, rerun, setting_rows, verify
from archlab.runners.train import evaluate_run, train

ROOT = Path(__file__).resolve().parents[2]
VIT = ROOT / "specs" / "vit-tiny-digits.json"


def config(**changes: Any) -> TrainConfig:
    base: dict[str, Any] = {"epochs": 2, "warmup": 0.5, "batch_size": 128, "lr": 2e-3}
    return TrainConfig(**{**base, **changes})


def series(registry: Registry, run_id: str, name: str) -> list[tuple[int, float]]:
    return [(step, value) for step, _e, value, _t in registry.metric_history(run_id, name)]


def test_a_rerun_of_a_fold_repeats_every_metric_series_bit_for_bit(registry: Registry) -> None:
    """Fold 1 of a 2-fold CV of the digits ViT, mixup on, seed 3, two epochs: the re-run trains
    on the same fold's indices and records the same series, value for value; only the time
    measure (samples_per_s) is left out of the comparison."""
    cfg = config(folds=2, fold=1, seed=3, mixup=0.2, name="fold-one")
    [original] = train(VIT, cfg, registry).runs
    run = registry.get(original)
    assert set(NEEDED) <= set(run.config)
    assert run.config["determinism"] == determinism_settings()
    assert run.config["data_seed"] == 3 * 1_000_003 + 1
    assert run.config["threads"] == torch.get_num_threads()
    assert run.provenance["packages"] == list(installed_packages())
    assert any(p.startswith("torch==") for p in run.provenance["packages"])

    report = verify(original, registry)
    assert report.equal and report.run == original
    again = registry.get(report.rerun)
    assert run.tags["name"] == "fold-one"  # the original's name is not the re-run's
    assert again.tags == {"reruns": original, "best_epoch": again.tags["best_epoch"],
                          "stopped_early": "False"}  # fmt: skip
    assert again.cv is None  # outside the CV group
    assert registry.group(run.cv.group).runs == [original]  # type: ignore[union-attr]
    assert registry.split_fingerprints(again.id) == registry.split_fingerprints(original)
    assert [s.metric for s in report.series] == ["lr", "train_loss", "val_acc", "val_loss"]
    assert report.skipped == ["samples_per_s"]
    for name in ("train_loss", "val_loss", "val_acc", "lr"):
        assert series(registry, again.id, name) == series(registry, original, name)
        assert len(series(registry, original, name)) == 2
    assert report.differing_settings() == []  # same process, same machine


def test_a_tampered_seed_shows_as_differing_series(registry: Registry, tmp_path: Path) -> None:
    """A data seed the code would not derive any more (as after a change of archlab): the
    re-run trains on another batch order, and verify says which series differ and where."""
    [original] = train(VIT, config(epochs=1, folds=2, fold=0), registry).runs
    with sqlite3.connect(tmp_path / "r.db") as db:
        db.execute(
            "UPDATE runs SET config = json_set(config, '$.data_seed', 12345) WHERE id = ?",
            (original,),
        )
    report = verify(original, registry)
    assert not report.equal
    loss = next(s for s in report.series if s.metric == "train_loss")
    assert loss.differing == 1 and loss.first_step == 1 and loss.max_abs is not None
    assert loss.max_abs > 0
    lr = next(s for s in report.series if s.metric == "lr")
    assert lr.equal  # the schedule does not depend on the order


def test_compare_series_is_exact_and_names_missing_steps() -> None:
    same = compare_series("x", {1: 0.5, 2: math.nan}, {1: 0.5, 2: math.nan})
    assert same.equal and same.first_step is None and same.max_abs is None
    ulp = compare_series("x", {1: 0.5}, {1: math.nextafter(0.5, 1.0)})
    assert ulp.differing == 1 and ulp.first_step == 1 and 0 < ulp.max_abs < 1e-15  # type: ignore[operator]
    short = compare_series("x", {1: 1.0, 2: 2.0, 3: 3.0}, {1: 1.0, 2: 2.5})
    assert (short.points, short.rerun_points, short.differing) == (3, 2, 2)
    assert short.first_step == 2 and short.max_abs == 0.5


def test_setting_rows_say_what_changed_and_what_was_not_recorded(registry: Registry) -> None:
    """Two recorded runs side by side: a package version and the thread count that differ are
    named; what an old run never recorded says so."""
    with registry.start_run(VIT, {"threads": 4}) as a:
        pass
    old = new = registry.get(a.id)
    changed = dict(new.provenance)
    changed["packages"] = [
        "torch==0.0.1" if p.startswith("torch==") else p for p in new.provenance["packages"]
    ]
    determinism = {"deterministic_algorithms": True}
    newer = replace(new, provenance=changed, config={"threads": 2, "determinism": determinism})
    rows = {name: (then, now) for name, then, now in setting_rows(old, newer)}
    torch_line = next(p for p in new.provenance["packages"] if p.startswith("torch=="))
    assert rows["packages"] == (torch_line, "torch==0.0.1")
    assert rows["threads"] == ("4", "2")
    assert rows["determinism.deterministic_algorithms"] == ("not recorded", "yes")
    bare = replace(old, provenance={"host": "h"})
    rows = {name: (then, now) for name, then, now in setting_rows(bare, new)}
    assert rows["packages"][0] == "not recorded" and rows["git.commit"][0] == "not recorded"


def test_applied_settings_hold_during_the_block_and_are_restored() -> None:
    before, threads = determinism_settings(), torch.get_num_threads()
    wanted = {**before, "deterministic_algorithms": True, "deterministic_warn_only": True}
    with applied(wanted, 1):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.get_num_threads() == 1
    assert determinism_settings() == before and torch.get_num_threads() == threads


def test_bad_input_is_refused_and_nothing_is_recorded(
    registry: Registry, random_images: Callable[[int, int], str], tmp_path: Path
) -> None:
    data = random_images(40, 4)
    [trained] = train(VIT, config(epochs=1, data=data, batch_size=16), registry).runs
    evaluated = evaluate_run(trained, registry).run
    with registry.start_run(VIT, {"task": "classify", "data": data}) as old:
        pass  # a training recorded by an older archlab: no seeds, threads or determinism
    with registry.start_run(VIT, {}) as stopped:
        stopped.end("interrupted")
    count = len(registry.runs())
    with pytest.raises(ValueError, match="no run 'nosuchrun'"):
        rerun("nosuchrun", registry)
    with pytest.raises(ValueError, match=f"is an eval run \\(it evaluates run {trained}\\)"):
        rerun(evaluated, registry)
    with pytest.raises(ValueError, match="lacks what a re-run needs: data_sha256, init_seed"):
        rerun(old.id, registry)
    with pytest.raises(ValueError, match=r"is interrupted: .* arch train --resume"):
        rerun(stopped.id, registry)
    with sqlite3.connect(tmp_path / "r.db") as db:  # a split the splitter no longer makes
        db.execute("UPDATE runs SET val_sha256 = ? WHERE id = ?", ("0" * 64, trained))
    with pytest.raises(ValueError, match="split cannot be rebuilt: its validation indices"):
        rerun(trained, registry)
    with sqlite3.connect(tmp_path / "r.db") as db:
        db.execute("UPDATE runs SET val_sha256 = NULL WHERE id = ?", (trained,))
    recorded = registry.get(trained).config["data_sha256"]
    path = Path(data.removeprefix("npz:"))
    x = np.random.default_rng(1).random((40, 1, 8, 8), dtype=np.float32)
    np.savez(path, x=x, y=np.arange(40) % 4)
    with pytest.raises(ValueError, match=f"hash was {recorded} and is [0-9a-f]{{64}} now"):
        rerun(trained, registry)
    assert len(registry.runs()) == count


def test_a_rerun_keeps_the_uncommitted_changes_of_its_working_tree(
    registry: Registry, random_images: Callable[[int, int], str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A training started in a git tree with changes keeps them (diff and untracked names) as a
    ``git-diff`` artifact, and so does its re-run."""
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                       cwd=repo, check=True, capture_output=True)  # fmt: skip

    git("init", "-q")
    (repo / "model.py").write_text("depth = 1\n")
    git("add", "model.py")
    git("commit", "-q", "-m", "one")
    (repo / "model.py").write_text("depth = 2\n")
    (repo / "notes.txt").write_text("new\n")
    monkeypatch.chdir(repo)
    data = random_images(40, 4)
    [trained] = train(VIT, config(epochs=1, data=data, batch_size=16), registry).runs
    again = rerun(trained, registry).runs[0]
    for run_id in (trained, again):
        run = registry.get(run_id)
        [kept] = [a for a in run.artifacts if a.kind == CHANGES_KIND]
        text = registry.artifact_file(run, kept.path).read_text()
        assert "+depth = 2" in text and "#   notes.txt" in text
        assert run.provenance["git"]["dirty"] is True


def test_a_run_of_an_old_registry_is_refused_naming_what_is_missing(tmp_path: Path) -> None:
    """The revision-0001 registry fixture (upgraded on open): its completed training recorded
    only its batch size and learning rate."""
    path = tmp_path / "old.db"
    shutil.copyfile(ROOT / "tests" / "registry" / "fixtures" / "registry_v0001.db", path)
    with Registry(f"sqlite:///{path}", artifacts=tmp_path / "old") as old:
        count = len(old.runs())
        missing = ", ".join(NEEDED)
        with pytest.raises(ValueError, match=f"run train0dd lacks what a re-run needs: {missing}"):
            verify("train0dd", old)
        assert len(old.runs()) == count
