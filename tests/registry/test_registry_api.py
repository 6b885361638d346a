"""The registry's Python API: where it lives, runs and their provenance, specs, CV groups, mixup,
metrics and artifacts. Tests taking ``registry`` / ``registry_url`` run on SQLite and PostgreSQL."""

from __future__ import annotations

import getpass
import hashlib
import json
import math
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from array import array
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

import archlab
from archlab.errors import UserInputError
from archlab.registry import MixupSetting, Registry, RegistryError, locate
from archlab.registry import migrate as migrate_module
from archlab.registry import provenance as provenance_module
from archlab.registry.handle import HEARTBEAT_S
from archlab.registry.models import ArtifactRow, MetricRow, MixupRow, RunRow, SpecRow
from archlab.specs import canonical_form, canonical_json

Doc = dict[str, Any]


@pytest.fixture
def spec(minimal_vit: Callable[[], Doc]) -> Doc:
    return minimal_vit()


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


# --- where the registry lives ---------------------------------------------------------------------


def test_default_location_is_the_user_level_registry(isolated: Path) -> None:
    """No ``.archlab/`` folder here or above: a writer opens (and creates) the user-level
    registry, never a folder in the current directory, and its artifacts live beside it."""
    if any((folder / ".archlab").is_dir() for folder in (isolated, *isolated.parents)):
        pytest.skip("an .archlab/ folder above the test folder would be found first")
    user = Path(os.environ["XDG_DATA_HOME"]) / "archlab"
    with Registry() as reg:
        assert reg.url == f"sqlite:///{user / 'registry.db'}"
        assert "user-level" in reg.location.describe()
        assert (user / "registry.db").is_file()
        assert reg.artifacts == user / "artifacts"
    assert not (isolated / ".archlab").exists()


def test_the_nearest_archlab_folder_is_found_walking_up(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, spec: Doc
) -> None:
    (isolated / "project" / ".archlab").mkdir(parents=True)
    deep = isolated / "project" / "src" / "models"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    with Registry() as reg:
        assert reg.url == f"sqlite:///{isolated / 'project' / '.archlab' / 'registry.db'}"
        assert f"found in {isolated / 'project' / '.archlab'}" in reg.location.describe()
        with reg.start_run(spec) as run:
            pass
    monkeypatch.chdir(isolated / "project")  # the same registry from anywhere in the project
    with Registry(create=False) as reg:
        assert [r.id for r in reg.runs()] == [run.id]
    # an explicit URL or $ARCHLAB_REGISTRY wins over the walk
    assert (
        locate(str(isolated / "other.db"), create=True).url == f"sqlite:///{isolated / 'other.db'}"
    )


def test_reading_creates_no_registry(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``create=False`` (the read-only commands): a missing registry is named, not created."""
    before = sorted(isolated.rglob("*"))
    with pytest.raises(RegistryError, match=r"no registry at sqlite:///.*user-level"):
        Registry(create=False)
    with pytest.raises(RegistryError, match=r"typo\.db \(given\).*does not exist"):
        Registry("typo.db", create=False)
    with pytest.raises(RegistryError, match=r"from \$ARCHLAB_REGISTRY"):
        monkeypatch.setenv("ARCHLAB_REGISTRY", f"sqlite:///{isolated / 'env.db'}")
        Registry(create=False)
    monkeypatch.delenv("ARCHLAB_REGISTRY")
    (isolated / ".archlab").mkdir()  # a project folder whose registry no run created yet
    with pytest.raises(RegistryError, match=r"no registry at .*found in"):
        Registry(create=False)
    assert sorted(isolated.rglob("*")) == [*before, isolated / ".archlab"]
    assert not (Path(os.environ["XDG_DATA_HOME"]) / "archlab").exists()


def test_an_empty_database_is_no_registry_to_read(registry_url: str) -> None:
    """A database without archlab's tables (an empty PostgreSQL database, a 0-byte file) is not
    a registry to a reader: it is refused, and nothing is created in it."""
    if registry_url.startswith("sqlite:"):
        Path(registry_url.removeprefix("sqlite:///")).touch()
    with pytest.raises(RegistryError, match="has no archlab tables"):
        Registry(registry_url, create=False)
    with Registry(registry_url):
        pass  # a writer creates the tables


def test_archlab_registry_variable_is_the_default(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCHLAB_REGISTRY", f"sqlite:///{isolated / 'from-env.db'}")
    with Registry() as reg:
        assert reg.url.endswith("from-env.db")
    assert (isolated / "from-env.db").is_file()
    assert not (isolated / ".archlab").exists()
    monkeypatch.setenv("ARCHLAB_REGISTRY", str(isolated / "plain-path.db"))  # a bare path: SQLite
    with Registry():
        pass
    assert (isolated / "plain-path.db").is_file()
    with Registry(f"sqlite:///{isolated / 'argument.db'}") as reg:  # the argument wins
        assert reg.url.endswith("argument.db")


def test_explicit_sqlite_file_is_created_but_not_its_folder(isolated: Path) -> None:
    with Registry(f"sqlite:///{isolated / 'new.db'}"):
        pass
    assert (isolated / "new.db").is_file()
    missing = isolated / "no" / "such" / "folder" / "reg.db"
    with pytest.raises(RegistryError, match=r"folder .* does not exist"):
        Registry(f"sqlite:///{missing}")
    assert not (isolated / "no").exists()


def test_unreachable_postgresql_is_a_registry_error() -> None:
    with pytest.raises(RegistryError, match="cannot open the registry at postgresql"):
        Registry("postgresql://postgres@127.0.0.1:1/test")


def test_bad_url_and_non_database_file_are_registry_errors(isolated: Path) -> None:
    with pytest.raises(RegistryError, match="not a database URL"):
        Registry("sqlite+://::nonsense")
    junk = isolated / "junk.db"
    junk.write_bytes(b"this is not a database" * 200)
    with pytest.raises(RegistryError, match="not a database"):
        Registry(f"sqlite:///{junk}")


# --- runs ---------------------------------------------------------------------------------------


def test_run_context_manager_completes(registry: Registry, spec: Doc) -> None:
    with registry.start_run(spec, {"lr": 0.1}) as run:
        assert registry.get(run.id).status == "running"
        run.log_metrics({"val_acc": 0.5}, step=0)
    got = registry.get(run.id)
    assert got.status == "completed"
    assert got.error is None
    assert got.ended is not None and got.started <= got.ended
    assert got.kind == "train"
    assert got.metrics == {"val_acc": 0.5}


def test_exception_fails_the_run_with_its_text(registry: Registry, spec: Doc) -> None:
    with pytest.raises(ValueError, match="diverged"), registry.start_run(spec) as run:
        run.log_metrics({"loss": 1.0}, step=0)
        raise ValueError("loss diverged at step 3")
    got = registry.get(run.id)
    assert got.status == "failed"
    assert got.error == "ValueError: loss diverged at step 3"
    assert got.metrics == {"loss": 1.0}  # metrics logged before the failure are kept


def test_keyboard_interrupt_interrupts_the_run(registry: Registry, spec: Doc) -> None:
    with pytest.raises(KeyboardInterrupt), registry.start_run(spec) as run:
        raise KeyboardInterrupt
    got = registry.get(run.id)
    assert got.status == "interrupted"
    assert "KeyboardInterrupt" in (got.error or "")


def test_end_by_hand_is_idempotent_and_checked(registry: Registry, spec: Doc) -> None:
    run = registry.start_run(spec)
    with pytest.raises(RegistryError, match="completed, failed or interrupted"):
        run.end("running")
    run.end("failed", "out of memory")
    run.end("completed")  # idempotent: the first end stands
    got = registry.get(run.id)
    assert (got.status, got.error) == ("failed", "out of memory")
    with pytest.raises(RegistryError, match="has ended"):
        run.log_metrics({"loss": 1.0})


def test_kinds_are_validated(registry: Registry, spec: Doc, raw_engine: Engine) -> None:
    with pytest.raises(RegistryError, match=r"unknown run kind 'training'.*train, eval, bench"):
        registry.start_run(spec, kind="training")
    assert count(raw_engine, RunRow) == 0
    for kind in ("train", "eval", "bench"):
        with registry.start_run(spec, kind=kind) as run:
            pass
        assert registry.get(run.id).kind == kind


def test_unknown_run_id_is_a_registry_error(registry: Registry, spec: Doc) -> None:
    with registry.start_run(spec) as run:
        pass
    with pytest.raises(RegistryError, match="no run 'nosuchid'"):
        registry.get("nosuchid")
    with pytest.raises(RegistryError, match=f"similar: {run.id}"):
        registry.get(run.id[:4] + "zzzz")


def test_config_and_tags_are_stored(registry: Registry, spec: Doc) -> None:
    config = {
        "optimizer": {"name": "adamw", "lr": 3e-4, "betas": (0.9, 0.95)},
        "epochs": 10,
        "data": Path("data/digits.npz"),
        "clip": math.inf,
        "warmup": math.nan,
    }
    with registry.start_run(spec, config, tags={"owner": "ada", "round": 2}) as run:
        run.tag(stage="final")
    registry.tag(run.id, round=3)
    got = registry.get(run.id)
    assert got.config == {
        "optimizer": {"name": "adamw", "lr": 3e-4, "betas": [0.9, 0.95]},
        "epochs": 10,
        "data": "data/digits.npz",
        "clip": "inf",  # strict JSON (PostgreSQL's) has no NaN or infinity
        "warmup": "nan",
    }
    assert got.tags == {"owner": "ada", "round": "3", "stage": "final"}
    with pytest.raises(RegistryError, match="tag key"):
        registry.tag(run.id, **{"k" * 101: 1})


def test_provenance_outside_a_git_repository(registry: Registry, spec: Doc) -> None:
    with registry.start_run(spec) as run:
        pass
    prov = registry.get(run.id).provenance
    assert prov["git"] is None
    assert prov["host"] == socket.gethostname()
    assert prov["user"] == getpass.getuser()
    assert prov["pid"] == os.getpid()
    assert prov["argv"] == sys.argv
    versions = prov["versions"]
    assert set(versions) == {"python", "torch", "archlab", "scikit-learn"}
    assert versions["python"] == sys.version.split()[0]
    assert versions["archlab"] == archlab.__version__
    assert versions["torch"] == metadata.version("torch")
    try:
        sklearn: str | None = metadata.version("scikit-learn")
    except metadata.PackageNotFoundError:
        sklearn = None
    assert versions["scikit-learn"] == sklearn


def git(repo: Path, *args: str) -> bytes:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout


def test_provenance_records_git_commit_dirty_flag_and_diff_hash(
    registry: Registry, spec: Doc, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = isolated / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "train.py").write_text("print('v1')\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "v1")
    head = git(repo, "rev-parse", "HEAD").decode().strip()
    monkeypatch.chdir(repo)

    with registry.start_run(spec) as clean:
        pass
    assert registry.get(clean.id).provenance["git"] == {
        "commit": head,
        "dirty": False,
        "diff_sha256": None,
    }
    assert registry.get(clean.id).provenance["cwd"] == str(repo)

    (repo / "train.py").write_text("print('v2')\n")
    monkeypatch.setattr(provenance_module, "GIT_STATE_TTL_S", 0.0)  # no reuse of the clean state
    with registry.start_run(spec) as dirty:
        pass
    diff = git(repo, "diff", "HEAD")
    assert diff
    assert registry.get(dirty.id).provenance["git"] == {
        "commit": head,
        "dirty": True,
        "diff_sha256": hashlib.sha256(diff).hexdigest(),
    }


def test_identical_architectures_share_one_spec_row(
    registry: Registry, spec: Doc, raw_engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec, indent=4, sort_keys=True))  # another layout, same spec
    with registry.start_run(spec) as a:
        pass
    with registry.start_run(str(path), kind="eval") as b:
        pass
    with registry.start_run(archlab.load_spec(spec)) as c:
        pass
    assert count(raw_engine, SpecRow) == 1
    hashes = {registry.get(r.id).spec_hash for r in (a, b, c)}
    assert hashes == {archlab.spec_hash(archlab.load_spec(spec))}
    assert registry.get(a.id).spec_name == "mini-vit"

    wider = json.loads(json.dumps(spec))
    wider["nodes"]["enc"]["depth"] = 6
    with registry.start_run(wider) as d:
        pass
    assert count(raw_engine, SpecRow) == 2
    assert registry.get(d.id).spec_hash != registry.get(a.id).spec_hash
    with raw_engine.connect() as conn:
        stored = dict(conn.execute(select(SpecRow.hash, SpecRow.canonical)).all())
    for source in (spec, wider):
        loaded = archlab.load_spec(source)
        assert stored[archlab.spec_hash(loaded)] == canonical_json(canonical_form(loaded))


# --- cross-validation ---------------------------------------------------------------------------


def sha_of_sorted_int64_le(indices: list[int]) -> str:
    """The fingerprint computed independently of the store: struct, little-endian int64."""
    return hashlib.sha256(struct.pack(f"<{len(indices)}q", *sorted(indices))).hexdigest()


def test_fold_runs_record_split_sizes_and_fingerprints(registry: Registry, spec: Doc) -> None:
    group = registry.start_cv(
        spec, {"epochs": 3}, k=3, splitter="StratifiedKFold", seed=7, stratified=True,
        library="scikit-learn 1.7.2",
    )  # fmt: skip
    assert (group.k, group.splitter, group.seed, group.stratified) == (
        3,
        "StratifiedKFold",
        7,
        True,
    )
    train = [9, 3, 5, 2**40, 0, 7]  # unsorted, one beyond 32 bits
    val = [1, 4, 8]
    with registry.start_run(
        spec, cv_group=group, fold=0, train_indices=train, val_indices=val
    ) as run:
        pass
    cv = registry.get(run.id).cv
    assert cv is not None
    assert (cv.group, cv.k, cv.fold, cv.n_train, cv.n_val) == (group.id, 3, 0, 6, 3)
    assert cv.train_sha256 == sha_of_sorted_int64_le(train)
    assert cv.val_sha256 == sha_of_sorted_int64_le(val)
    native = array("q", sorted(val))
    if sys.byteorder == "big":
        native.byteswap()
    assert cv.val_sha256 == hashlib.sha256(native.tobytes()).hexdigest()
    assert registry.group(group.id).runs == [run.id]
    # a fold run of a group given by id works the same
    with registry.start_run(spec, cv_group=group.id, fold=1) as other:
        pass
    assert registry.get(other.id).cv.fold == 1  # type: ignore[union-attr]
    assert registry.get(other.id).cv.n_train is None  # type: ignore[union-attr]


def test_cv_aggregates_follow_completed_folds(registry: Registry, spec: Doc) -> None:
    group = registry.start_cv(spec, k=4, seed=0)
    finals = [0.81, 0.86, 0.84]
    ids = []
    for fold, acc in enumerate(finals):
        with registry.start_run(spec, cv_group=group, fold=fold) as run:
            run.log_metrics({"val_acc": acc - 0.1, "val_loss": 1.0}, step=0)
            run.log_metrics({"val_acc": acc, "val_loss": 1.0 - acc}, step=1)
        ids.append(run.id)
        agg = registry.group(group.id).aggregates["val_acc"]
        done = finals[: fold + 1]
        assert agg.n == len(done)
        assert agg.mean == pytest.approx(statistics.fmean(done))
        # the sample std of a single fold is undefined: None, never a reassuring 0.0
        assert agg.std == (pytest.approx(statistics.stdev(done)) if len(done) > 1 else None)
        assert (agg.min, agg.max) == (min(done), max(done))
    loss = registry.group(group.id).aggregates["val_loss"]
    assert loss.mean == pytest.approx(statistics.fmean(1 - a for a in finals))

    # a failed and a still-running fold do not count
    with pytest.raises(RuntimeError), registry.start_run(spec, cv_group=group, fold=3) as bad:
        bad.log_metrics({"val_acc": 0.1}, step=1)
        raise RuntimeError("oom")
    running = registry.start_run(spec, cv_group=group, fold=3)
    running.log_metrics({"val_acc": 0.2}, step=1)
    running.flush()
    assert registry.group(group.id).aggregates["val_acc"].n == 3
    running.end("interrupted")
    assert registry.group(group.id).aggregates["val_acc"].n == 3

    # removing a fold updates the aggregates
    registry.remove(ids[1])
    agg = registry.group(group.id).aggregates["val_acc"]
    kept = [finals[0], finals[2]]
    assert (agg.n, agg.min, agg.max) == (2, min(kept), max(kept))
    assert agg.mean == pytest.approx(statistics.fmean(kept))
    assert agg.std == pytest.approx(statistics.stdev(kept))
    assert ids[1] not in registry.group(group.id).runs
    with pytest.raises(RegistryError):
        registry.get(ids[1])


def test_a_nan_final_value_does_not_enter_the_aggregates(registry: Registry, spec: Doc) -> None:
    group = registry.start_cv(spec, k=3)
    for fold, value in enumerate([0.5, math.nan, 0.7]):
        with registry.start_run(spec, cv_group=group, fold=fold) as run:
            run.log_metrics({"val_acc": value}, step=0)
    agg = registry.group(group.id).aggregates["val_acc"]
    assert (agg.n, agg.min, agg.max) == (2, 0.5, 0.7)
    assert agg.mean == pytest.approx(0.6)


def test_fold_runs_are_checked(
    registry: Registry, spec: Doc, raw_engine: Engine, minimal_gpt: Callable[[], Doc]
) -> None:
    with pytest.raises(RegistryError, match="k >= 2"):
        registry.start_cv(spec, k=1)
    group = registry.start_cv(spec, k=3)
    with pytest.raises(RegistryError, match="belongs to another spec"):
        registry.start_run(minimal_gpt(), cv_group=group, fold=0)
    for fold in (3, -1):
        with pytest.raises(RegistryError, match="outside the group's 3 folds"):
            registry.start_run(spec, cv_group=group, fold=fold)
    with pytest.raises(RegistryError, match="needs both cv_group and fold"):
        registry.start_run(spec, cv_group=group)
    with pytest.raises(RegistryError, match="needs both cv_group and fold"):
        registry.start_run(spec, fold=0)
    with pytest.raises(RegistryError, match="no CV group 'nosuch'"):
        registry.start_run(spec, cv_group="nosuch", fold=0)
    assert count(raw_engine, RunRow) == 0
    repeated = registry.start_cv(spec, k=2, repeats=3)  # repeated k-fold: k x repeats folds
    with registry.start_run(spec, cv_group=repeated, fold=5):
        pass


def test_a_fold_counts_once_in_its_group(registry: Registry, spec: Doc) -> None:
    from click.testing import CliRunner

    from archlab.cli.main import cli

    group = registry.start_cv(spec, k=3)
    with registry.start_run(spec, cv_group=group, fold=0) as run:
        run.log_metrics({"val_acc": 0.8}, step=1)
    with pytest.raises(RegistryError, match=f"fold 0 of CV group {group.id} is already completed"):
        registry.start_run(spec, cv_group=group, fold=0)
    # two runs of one fold started before either completed (or written by an older archlab):
    # the first completed one counts, the other does not enter the aggregates
    first = registry.start_run(spec, cv_group=group, fold=1)
    second = registry.start_run(spec, cv_group=group, fold=1)
    for handle, value in ((first, 0.6), (second, 0.9)):
        handle.log_metrics({"val_acc": value}, step=1)
        handle.end()
    agg = registry.group(group.id).aggregates["val_acc"]
    assert (agg.n, agg.mean, agg.max) == (2, pytest.approx(0.7), 0.8)
    assert registry.completed_folds(group.id) == {0: run.id, 1: first.id}
    listed = CliRunner().invoke(cli, ["runs", "list", "--group", "--registry", registry.url])
    assert listed.exit_code == 0, listed.output
    assert "2 of 3 folds" in listed.output  # three runs, two folds


def test_rank_judges_a_cv_group_by_its_mean_not_its_best_fold(
    registry: Registry, spec: Doc
) -> None:
    from click.testing import CliRunner

    from archlab.cli.main import cli

    groups = []
    for finals in ([0.95, 0.55], [0.8, 0.8]):  # means 0.75 and 0.8
        group = registry.start_cv(spec, k=2)
        for fold, value in enumerate(finals):
            with registry.start_run(spec, cv_group=group, fold=fold) as run:
                run.log_metrics({"val_acc": value, "val_loss": 1 - value}, step=1)
        groups.append(group.id)
    lucky, steady = groups
    with registry.start_run(spec) as alone:
        alone.log_metrics({"val_acc": 0.78, "val_loss": 0.3}, step=1)
        alone.log_metrics({"val_acc": 0.7, "val_loss": 0.1}, step=2)
    [top] = registry.rank("val_acc")
    assert top.group is not None and top.id == steady and top.value == pytest.approx(0.8)
    assert top.aggregate is not None and top.aggregate.n == 2
    assert [e.id for e in registry.rank("val_acc", limit=None)] == [steady, alone.id, lucky]
    assert [e.id for e in registry.rank("val_acc", by="group", limit=None)] == [steady, lucky]
    [fold] = registry.rank("val_acc", by="run")  # every run alone: the lucky fold
    assert fold.run is not None and fold.run.cv is not None and fold.run.cv.group == lucky
    # lower is better for a loss: the lone run's best 0.1 beats both groups' means
    assert [e.id for e in registry.rank("val_loss", limit=None)] == [alone.id, steady, lucky]
    with pytest.raises(RegistryError, match="rank by 'auto', 'group' or 'run'"):
        registry.rank("val_acc", by="fold")
    runner = CliRunner()
    url = registry.url
    shown = runner.invoke(cli, ["runs", "best", "--metric", "val_acc", "--registry", url])
    assert shown.exit_code == 0, shown.output
    assert steady in shown.output and "mean of final values over 2 folds" in shown.output
    doc = json.loads(
        runner.invoke(
            cli, ["runs", "best", "--metric", "val_acc", "--group", "--format", "json",
                  "--registry", url],
        ).output
    )  # fmt: skip
    assert [(d["type"], d["id"]) for d in doc] == [("cv_group", steady)]
    runs = runner.invoke(cli, ["runs", "best", "--metric", "val_acc", "--runs", "--registry", url])
    assert runs.exit_code == 0 and lucky in runs.output


# --- mixup --------------------------------------------------------------------------------------


MIXUP = {
    "alpha": 0.8,
    "cutmix_alpha": 1.0,
    "cutmix_minmax": [0.3, 0.9],
    "prob": 0.9,
    "switch_prob": 0.4,
    "mode": "pair",
    "label_smoothing": 0.1,
    "off_epoch": 90,
}


def test_mixup_round_trips(registry: Registry, spec: Doc) -> None:
    want = MixupSetting(
        alpha=0.8,
        cutmix_alpha=1.0,
        cutmix_minmax=(0.3, 0.9),
        prob=0.9,
        switch_prob=0.4,
        mode="pair",
        label_smoothing=0.1,
        off_epoch=90,
    )
    forms: dict[str, Any] = {
        "dict": dict(MIXUP),
        "object": SimpleNamespace(**MIXUP, unrelated="ignored"),
        "record": MixupSetting.from_any(MIXUP),
    }
    for form, given in forms.items():
        with registry.start_run(spec, mixup=given) as run:
            pass
        got = registry.get(run.id).mixup
        assert got == want, form
        assert got.to_dict() == MIXUP
        assert registry.get(run.id).to_dict()["mixup"] == MIXUP


def test_partial_mixup_takes_timm_defaults(registry: Registry, spec: Doc) -> None:
    with registry.start_run(spec, mixup={"cutmix_alpha": 1.0}) as run:
        pass
    assert registry.get(run.id).mixup == MixupSetting(cutmix_alpha=1.0)


def test_inactive_mixup_records_none(registry: Registry, spec: Doc, raw_engine: Engine) -> None:
    inactive: list[Any] = [
        {},
        {"alpha": 0.0, "cutmix_alpha": 0.0},
        {"alpha": 0.4, "prob": 0.0},  # never applied
        SimpleNamespace(alpha=0.0, cutmix_alpha=0.0, mode="elem"),
    ]
    for setting in inactive:
        with registry.start_run(spec, mixup=setting) as run:
            pass
        assert registry.get(run.id).mixup is None, setting
        assert registry.get(run.id).to_dict()["mixup"] is None
    assert count(raw_engine, MixupRow) == 0


INVALID_MIXUP = [
    ({"alpha": -0.1}, "alpha must be a finite number >= 0"),
    ({"alpha": math.inf}, "alpha must be a finite number >= 0"),
    ({"alpha": "0.2"}, "alpha must be a finite number"),
    ({"prob": 1.5}, r"prob must be in \[0, 1\]"),
    ({"switch_prob": -1}, r"switch_prob must be in \[0, 1\]"),
    ({"mode": "batchwise"}, "mode must be one of batch, pair, elem"),
    ({"cutmix_minmax": [0.9, 0.3]}, "cutmix_minmax must be"),
    ({"cutmix_minmax": [0.5]}, "cutmix_minmax must be"),
    ({"cutmix_minmax": 0.5}, "cutmix_minmax must be"),
    ({"off_epoch": -1}, "off_epoch must be an integer >= 0"),
    ({"off_epoch": "10"}, "off_epoch must be an integer >= 0"),
    ({"alpha": 0.2, "beta": 1}, r"unknown mixup field\(s\) \['beta'\]"),
    (0.2, "not a mixup setting"),
]


@pytest.mark.parametrize(("bad", "message"), INVALID_MIXUP)
def test_invalid_mixup_values_are_refused(bad: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MixupSetting.from_any(bad)


def test_a_run_with_invalid_mixup_is_not_started(
    registry: Registry, spec: Doc, raw_engine: Engine
) -> None:
    for bad, message in INVALID_MIXUP:
        with pytest.raises(RegistryError, match=message):
            registry.start_run(spec, mixup=bad)
    assert count(raw_engine, RunRow) == 0


# --- metrics ------------------------------------------------------------------------------------


def history(registry: Registry, run_id: str, name: str) -> list[tuple[int, float]]:
    return [(step, value) for step, _, value, _ in registry.metric_history(run_id, name)]


def test_metrics_are_buffered_until_a_flush(registry: Registry, spec: Doc) -> None:
    run = registry.start_run(spec, heartbeat=60)
    assert run._interval == 5.0  # the heartbeat (and its flush) never waits more than 5 s
    assert HEARTBEAT_S <= 5.0
    run.log_metrics({"loss": 2.0, "acc": 0.1}, step=0)
    run.log_metrics({"loss": 1.0, "acc": 0.2}, step=1)
    assert history(registry, run.id, "loss") == []  # buffered, not yet written
    beat = registry.get(run.id).heartbeat
    time.sleep(0.01)
    run.flush()
    assert history(registry, run.id, "loss") == [(0, 2.0), (1, 1.0)]
    assert registry.get(run.id).heartbeat > beat  # a flush is a heartbeat
    run.log_metrics({"loss": 0.5}, step=2)
    run.end()
    assert history(registry, run.id, "loss")[-1] == (2, 0.5)  # the end flushes


def test_the_heartbeat_flushes_in_the_background(registry: Registry, spec: Doc) -> None:
    run = registry.start_run(spec, heartbeat=0.1)
    start_beat = registry.get(run.id).heartbeat
    run.log_metrics({"loss": 1.0}, step=0)
    deadline = time.monotonic() + 10
    while not history(registry, run.id, "loss") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert history(registry, run.id, "loss") == [(0, 1.0)]
    assert registry.get(run.id).heartbeat > start_beat
    run.end()


def heartbeat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "archlab-heartbeat"]


def test_one_heartbeat_thread_serves_every_run_of_a_registry(
    registry_url: str, spec: Doc, isolated: Path
) -> None:
    before = len(heartbeat_threads())
    registry = Registry(registry_url, artifacts=isolated / "artifacts")
    fast = [registry.start_run(spec, heartbeat=0.05) for _ in range(3)]
    slow = registry.start_run(spec, heartbeat=60)  # beats every 5 s at most
    started = time.monotonic()
    assert len(heartbeat_threads()) == before + 1
    for i, run in enumerate([*fast, slow]):
        run.log_metrics({"loss": float(i)}, step=0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(history(registry, r.id, "loss") for r in fast):
        time.sleep(0.05)
    assert [history(registry, r.id, "loss") for r in fast] == [[(0, 0.0)], [(0, 1.0)], [(0, 2.0)]]
    if time.monotonic() - started < 4.5:  # (a very loaded machine may reach its period)
        assert history(registry, slow.id, "loss") == []  # its own, slower period
    for run in [*fast, slow]:
        run.end()
    assert history(registry, slow.id, "loss") == [(0, 3.0)]
    registry.close()
    deadline = time.monotonic() + 10
    while len(heartbeat_threads()) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(heartbeat_threads()) == before  # closing the registry stops its thread


def test_a_stopped_heartbeat_writes_nothing_more(registry: Registry, spec: Doc) -> None:
    run = registry.start_run(spec, heartbeat=0.05)
    run.flush()
    run._stop_heartbeat()  # as when the process stops without ending the run
    run.log_metrics({"loss": 1.0}, step=0)
    beat = registry.get(run.id).heartbeat
    time.sleep(0.3)
    assert registry.get(run.id).heartbeat == beat
    assert history(registry, run.id, "loss") == []
    run.end()
    assert history(registry, run.id, "loss") == [(0, 1.0)]


def test_ending_a_fold_is_one_transaction(
    registry: Registry, spec: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last metrics, the status and the group's aggregates commit together: a run is never
    seen completed without its final values, nor its group without its fold."""
    group = registry.start_cv(spec, k=2)
    run = registry.start_run(spec, cv_group=group, fold=0)
    run.log_metrics({"val_acc": 0.8}, step=0)
    transactions: list[str] = []
    real = registry._transaction

    def spy(fn: Any) -> Any:
        transactions.append(fn.__qualname__)
        return real(fn)

    monkeypatch.setattr(registry, "_transaction", spy)
    run.end()
    assert len(transactions) == 1
    assert registry.get(run.id).status == "completed"
    assert registry.group(group.id).aggregates["val_acc"].mean == pytest.approx(0.8)


def test_groups_and_specs_made_by_another_registry_are_found(
    registry_url: str, spec: Doc, isolated: Path
) -> None:
    with Registry(registry_url, artifacts=isolated / "a") as first:
        group = first.start_cv(spec, k=3, seed=7)
    with Registry(registry_url, artifacts=isolated / "a") as second:
        with second.start_run(spec, cv_group=group.id, fold=2) as run:
            run.log_metrics({"val_acc": 0.5}, step=0)
        with pytest.raises(RegistryError, match="outside the group's 3 folds"):
            second.start_run(spec, cv_group=group.id, fold=3)
        got = second.group(group.id)
    assert (got.k, got.seed, got.shuffle, got.runs) == (3, 7, True, [run.id])
    assert got.aggregates["val_acc"].n == 1


def test_a_cv_group_repeats_at_least_once(registry: Registry, spec: Doc) -> None:
    with pytest.raises(RegistryError, match="at least once"):
        registry.start_cv(spec, k=3, repeats=0)


def test_a_large_buffer_is_written_in_one_batch(
    registry: Registry, spec: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = registry.start_run(spec, heartbeat=5)
    monkeypatch.setattr(run, "FLUSH_ROWS", 100)
    writes: list[int] = []
    real = registry._write_metrics

    def spy(handle: Any, points: list[Any], *args: Any) -> None:
        writes.append(len(points))
        real(handle, points, *args)

    monkeypatch.setattr(registry, "_write_metrics", spy)
    for step in range(99):
        run.log_metrics({"loss": 1 / (step + 1)}, step=step)
    assert writes == []
    run.log_metrics({"loss": 0.001}, step=99)  # the 100th point fills the buffer
    assert writes == [100]
    assert len(history(registry, run.id, "loss")) == 100
    run.end()


def test_summaries_final_best_and_best_step(registry: Registry, spec: Doc) -> None:
    series = {
        "val_acc": [0.5, 0.7, 0.9, 0.8],  # higher is better
        "train/loss": [2.0, 1.0, 1.5, 1.2],  # lower is better
        "error_rate": [0.3, 0.1, 0.2, 0.25],
        "perplexity": [30.0, 20.0, 10.0, 12.0],
        "lr": [0.1, 0.3, 0.2, 0.05],  # neither: higher counts as better
    }
    with registry.start_run(spec) as run:
        for step in range(4):
            run.log_metrics({k: v[step] for k, v in series.items()}, step=step, epoch=step / 2)
            if step == 1:
                run.flush()  # summaries fold in over several batches
    got = registry.get(run.id)
    expect = {
        "val_acc": (0.8, 3, 0.9, 2),
        "train/loss": (1.2, 3, 1.0, 1),
        "error_rate": (0.25, 3, 0.1, 1),
        "perplexity": (12.0, 3, 10.0, 2),
        "lr": (0.05, 3, 0.3, 1),
    }
    for name, (final, final_step, best, best_step) in expect.items():
        s = got.summaries[name]
        assert (s.final, s.final_step, s.best, s.best_step, s.count) == (
            final,
            final_step,
            best,
            best_step,
            4,
        ), name
    assert got.metrics == {k: v[0] for k, v in expect.items()}
    assert [e for _, e, _, _ in registry.metric_history(run.id, "val_acc")] == [0, 0.5, 1.0, 1.5]


def test_steps_default_to_one_past_the_last(registry: Registry, spec: Doc) -> None:
    with registry.start_run(spec) as run:
        run.log_metrics({"loss": 3.0})
        run.log_metrics({"loss": 2.0})
        run.log_metrics({"loss": 1.0}, step=10)
        run.log_metrics({"loss": 0.5})
    assert [s for s, _ in history(registry, run.id, "loss")] == [0, 1, 10, 11]


def test_relogging_a_step_overwrites_it(registry: Registry, spec: Doc) -> None:
    with registry.start_run(spec) as run:
        run.log_metrics({"val_acc": 0.9}, step=0)
        run.log_metrics({"val_acc": 0.6}, step=0)  # same batch
        run.log_metrics({"val_acc": 0.5}, step=1)
        run.flush()
        s = registry.get(run.id).summaries["val_acc"]
        assert (s.best, s.best_step, s.count) == (0.6, 0, 2)
        run.log_metrics({"val_acc": 0.4}, step=0)  # a later batch rewrites step 0 (the best)
        run.flush()
        s = registry.get(run.id).summaries["val_acc"]
        assert (s.final, s.final_step, s.best, s.best_step, s.count) == (0.5, 1, 0.5, 1, 2)
        run.log_metrics({"val_acc": 0.3}, step=1)  # and the final step
    s = registry.get(run.id).summaries["val_acc"]
    assert (s.final, s.final_step, s.best, s.best_step, s.count) == (0.3, 1, 0.4, 0, 2)
    assert history(registry, run.id, "val_acc") == [(0, 0.4), (1, 0.3)]


def test_backfilled_steps_keep_the_summary_right(registry: Registry, spec: Doc) -> None:
    with registry.start_run(spec) as run:
        run.log_metrics({"loss": 1.0}, step=5)
        run.flush()
        run.log_metrics({"loss": 0.2}, step=3)  # an earlier step, logged late
    s = registry.get(run.id).summaries["loss"]
    assert (s.final, s.final_step, s.best, s.best_step, s.count) == (1.0, 5, 0.2, 3, 2)


def test_nan_values_are_kept_but_never_best(registry: Registry, spec: Doc) -> None:
    with registry.start_run(spec) as run:
        run.log_metrics({"loss": math.nan, "acc": 0.5, "all_nan": math.nan}, step=0)
        run.flush()
        run.log_metrics({"loss": 1.0, "acc": math.inf, "all_nan": math.nan}, step=1)
        run.log_metrics({"loss": 2.0, "acc": math.nan, "all_nan": math.nan}, step=2)
    got = registry.get(run.id)
    loss, acc, nan = got.summaries["loss"], got.summaries["acc"], got.summaries["all_nan"]
    assert (loss.final, loss.best, loss.best_step, loss.count) == (2.0, 1.0, 1, 3)
    assert math.isnan(acc.final) and acc.final_step == 2
    assert (acc.best, acc.best_step) == (math.inf, 1)
    assert math.isnan(nan.final) and math.isnan(nan.best) and nan.best_step is None
    assert nan.count == 3
    values = [v for _, v in history(registry, run.id, "loss")]
    assert math.isnan(values[0]) and values[1:] == [1.0, 2.0]
    assert math.isnan(got.metrics["acc"])


def test_metric_history_of_unknown_names(registry: Registry, spec: Doc) -> None:
    with registry.start_run(spec) as run:
        run.log_metrics({"loss": 1.0}, step=0)
    assert registry.metric_history(run.id, "nope") == []
    with pytest.raises(RegistryError, match="no run"):
        registry.metric_history("nosuchrun", "loss")


def test_metric_keys_stay_right_after_a_rolled_back_write(
    registry: Registry, spec: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed write must not leave a key id that its transaction never committed in the cache."""
    run = registry.start_run(spec)
    run.log_metrics({"fresh_metric": 1.0}, step=0)
    real = registry._fold_summaries

    def fail(*args: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(registry, "_fold_summaries", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        run.flush()
    assert "fresh_metric" not in registry._keys
    monkeypatch.setattr(registry, "_fold_summaries", real)
    run.end()  # the points went back to the buffer and are written now
    assert history(registry, run.id, "fresh_metric") == [(0, 1.0)]


def test_a_failed_final_flush_still_ends_the_run(
    registry: Registry, spec: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = registry.start_run(spec)
    run.log_metrics({"loss": 1.0}, step=0)

    def fail(*args: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(registry, "_write_metrics", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        run.end()
    got = registry.get(run.id)
    assert got.status == "failed"
    assert "could not write the last metrics: RuntimeError: disk full" in (got.error or "")


# --- artifacts ----------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_outside_files_are_copied_into_the_run_folder(
    registry: Registry, spec: Doc, isolated: Path
) -> None:
    source = isolated / "elsewhere" / "model.safetensors"
    source.parent.mkdir()
    source.write_bytes(os.urandom(3000))
    with registry.start_run(spec) as run:
        art = run.log_artifact(source, "checkpoint")
    assert art.path == f"{run.id}/model.safetensors"
    stored = registry.artifacts / art.path
    assert stored.read_bytes() == source.read_bytes()
    assert (art.kind, art.size, art.sha256) == ("checkpoint", 3000, sha256_of(source))
    assert registry.get(run.id).artifacts == [art]


def test_files_inside_the_folder_are_recorded_in_place(registry: Registry, spec: Doc) -> None:
    with registry.start_run(spec) as run:
        inside = registry.artifacts / "shared" / "plot.png"
        inside.parent.mkdir(parents=True)
        inside.write_bytes(b"png")
        art = run.log_artifact(inside, "plot")
        copied = run.log_artifact(inside, "plot", copy=True)
    assert art.path == "shared/plot.png"
    assert copied.path == f"{run.id}/plot.png"
    assert [a.path for a in registry.get(run.id).artifacts] == [art.path, copied.path]


def test_artifact_paths_cannot_escape_the_folder(
    registry: Registry, spec: Doc, isolated: Path
) -> None:
    secret = isolated / "secret.txt"
    secret.write_text("do not touch")
    root = registry.artifacts
    root.mkdir(parents=True)
    with registry.start_run(spec) as run:
        # a link inside the folder to a file outside: the content is copied in
        link = root / "innocent.txt"
        link.symlink_to(secret)
        art = run.log_artifact(link)
        assert art.path == f"{run.id}/innocent.txt"  # named as logged
        stored = root / art.path
        assert not stored.is_symlink() and stored.read_text() == "do not touch"

        # ../ out of the folder and back: the resolved file is outside, so it is copied in
        trick = root / run.id / ".." / ".." / "secret.txt"
        art = run.log_artifact(trick)
        assert ".." not in art.path and (root / art.path).resolve().is_relative_to(root.resolve())

        # a link planted where the copy goes is replaced, never written through
        (isolated / "payload.txt").write_text("evil")
        planted = root / run.id / "payload.txt"
        planted.symlink_to(secret)
        art = run.log_artifact(isolated / "payload.txt")
        assert secret.read_text() == "do not touch"
        assert not planted.is_symlink() and planted.read_text() == "evil"
        assert art.path == f"{run.id}/payload.txt"

    # a run folder that is a link to elsewhere is refused
    outside = isolated / "outside"
    outside.mkdir()
    with registry.start_run(spec) as other:
        (root / other.id).symlink_to(outside, target_is_directory=True)
        with pytest.raises(RegistryError, match="leads outside"):
            other.log_artifact(isolated / "payload.txt")
    assert list(outside.iterdir()) == []
    for a in registry.get(run.id).artifacts:
        assert (root / a.path).resolve().is_relative_to(root.resolve())
        assert sha256_of(root / a.path) == a.sha256


def test_missing_artifact_is_a_registry_error(
    registry: Registry, spec: Doc, isolated: Path
) -> None:
    with registry.start_run(spec) as run:
        with pytest.raises(RegistryError, match="no such artifact file"):
            run.log_artifact(isolated / "nope.bin")
        with pytest.raises(RegistryError, match="no such artifact file"):
            run.log_artifact(isolated)  # a folder is not a file
    assert registry.get(run.id).artifacts == []


def test_artifact_sizes_beyond_32_bits(registry: Registry, spec: Doc, raw_engine: Engine) -> None:
    """PostgreSQL's INTEGER stops at 2 GiB; checkpoints do not. (The row is written directly: a
    3 GiB file would take seconds to hash.)"""
    with registry.start_run(spec) as run:
        pass
    size = 3 * 2**30

    def write(session: Any) -> None:
        session.add(
            ArtifactRow(
                run_pk=run.pk,
                path="x.pt",
                kind="checkpoint",
                size=size,
                sha256="0" * 64,
                created=0.0,
            )
        )

    registry._transaction(lambda tx: write(tx.session))
    assert registry.get(run.id).artifacts[0].size == size
    with raw_engine.connect() as conn:
        assert conn.scalar(text("SELECT size FROM artifacts")) == size


def test_removing_a_run_removes_its_rows(
    registry: Registry, spec: Doc, raw_engine: Engine, isolated: Path
) -> None:
    (isolated / "f.txt").write_text("x")
    with registry.start_run(spec, tags={"a": 1}, mixup={"alpha": 0.1}) as run:
        run.log_metrics({"loss": 1.0, "acc": 0.5}, step=0)
        art = run.log_artifact(isolated / "f.txt")
    with registry.start_run(spec) as keep:
        keep.log_metrics({"loss": 1.0}, step=0)
    kept = keep.log_artifact(isolated / "f.txt")
    assert (registry.artifacts / art.path).is_file()
    deleted = registry.remove(run.id)
    assert count(raw_engine, RunRow) == 1
    assert count(raw_engine, MetricRow) == 1
    assert count(raw_engine, MixupRow) == 0
    # the run's files go with it (its folder under the artifact root); the other run's stay
    assert deleted == [registry.artifacts / run.id]
    assert not (registry.artifacts / run.id).exists()
    assert (registry.artifacts / kept.path).is_file()
    assert (isolated / "f.txt").is_file()  # the source file, outside the root, is not touched
    with pytest.raises(RegistryError):
        registry.remove(run.id)


def test_orphan_artifact_folders_are_found_and_reclaimed(
    registry: Registry, spec: Doc, isolated: Path
) -> None:
    """What a removal left behind (files it could not delete, or removals by an older archlab,
    which kept every file) is found by name and reclaimed; live runs' folders and folders that
    are not named like runs stay."""
    (isolated / "f.txt").write_text("x")
    with registry.start_run(spec) as live:
        live.log_artifact(isolated / "f.txt")
    with registry.start_run(spec) as gone:
        gone.log_artifact(isolated / "f.txt")
    registry.remove(gone.id, files=False)  # as archlab did before: the records go, files stay
    (registry.artifacts / "Not-A-Run").mkdir()
    assert registry.orphan_artifacts() == [registry.artifacts / gone.id]
    assert registry.remove_orphans(registry.orphan_artifacts()) == [registry.artifacts / gone.id]
    assert not (registry.artifacts / gone.id).exists()
    assert (registry.artifacts / live.id).is_dir() and (registry.artifacts / "Not-A-Run").is_dir()
    assert registry.orphan_artifacts() == []


def test_a_run_removed_while_running_ends_quietly(registry: Registry, spec: Doc) -> None:
    handle = registry.start_run(spec, {"lr": 1.0})
    handle.log_metrics({"val_acc": 0.5}, step=0)
    registry.remove(handle.id)
    handle.log_metrics({"val_acc": 0.6}, step=1)
    handle.end()  # neither the late metrics nor the end raise
    assert registry.runs() == []


def test_best_by_spec_with_odd_metric_names(
    registry: Registry, minimal_vit: Callable[[], Doc], minimal_gpt: Callable[[], Doc]
) -> None:
    ids = {}
    for name, doc, values in (
        ("vit", minimal_vit(), (0.5, 0.7)),
        ("gpt", minimal_gpt(), (0.6, 0.4)),
    ):
        for value in values:
            with registry.start_run(doc) as run:
                run.log_metrics({"acc@1": value, "val loss": 1 - value}, step=0)
            ids[(name, value)] = run.id
    best = registry.best("acc@1", group_by="spec")
    assert [r.id for r in best] == [ids[("vit", 0.7)], ids[("gpt", 0.6)]]
    assert [r.id for r in registry.best("val loss")] == [ids[("vit", 0.7)]]
    assert registry.best("missing") == []


# --- names, text, limits (issue 11) -----------------------------------------------------------


def test_each_run_keeps_the_name_its_spec_had(registry: Registry, spec: Doc) -> None:
    """Specs that differ only in their name share a hash (and a stored spec): each run still
    lists, exports and queries under the name its own spec had."""
    from archlab import load_spec

    renamed = load_spec({**spec, "name": "mini-vit-renamed"})
    with registry.start_run(spec) as first:
        pass
    for _ in range(2):  # the second start takes the cached spec object's path
        with registry.start_run(renamed) as later:
            pass
    assert registry.get(first.id).spec_hash == registry.get(later.id).spec_hash
    assert registry.get(first.id).spec_name == "mini-vit"
    assert registry.get(later.id).spec_name == "mini-vit-renamed"
    found = registry.runs(where="spec.name == 'mini-vit-renamed'")
    assert len(found) == 2 and later.id in {r.id for r in found}
    assert [r.id for r in registry.runs(where="spec.name == 'mini-vit'")] == [first.id]


@pytest.mark.parametrize("bad", ["a\x00b", "lone \udc80 surrogate"])
def test_text_no_backend_stores_is_refused_alike(registry: Registry, spec: Doc, bad: str) -> None:
    """NUL characters (PostgreSQL refuses them) and lone surrogates (not UTF-8) in tags, metric
    names, spec names and artifact kinds: a RegistryError on every backend, nothing written."""
    with pytest.raises(RegistryError, match="NUL character or a lone surrogate"):
        registry.start_run(spec, tags={"note": bad})
    with pytest.raises(RegistryError, match="NUL character or a lone surrogate"):
        registry.start_run(spec, tags={bad: "x"})
    # the spec loader refuses a lone surrogate in a spec before the registry sees it
    with pytest.raises(UserInputError, match=r"NUL character or a lone surrogate|lone UTF-16"):
        registry.start_run({**spec, "name": bad})
    assert registry.runs() == []
    with registry.start_run(spec) as run:
        with pytest.raises(RegistryError, match="NUL character or a lone surrogate"):
            run.log_metrics({bad: 1.0})
        with pytest.raises(RegistryError, match="NUL character or a lone surrogate"):
            registry.tag(run.id, note=bad)
        run.log_metrics({"ok": 1.0})
    assert registry.get(run.id).tags == {} and set(registry.get(run.id).metrics) == {"ok"}
    # an error text with such characters is stored escaped: the run still ends
    with pytest.raises(ValueError), registry.start_run(spec) as failing:
        raise ValueError(f"bad {bad}")
    assert registry.get(failing.id).status == "failed"
    with pytest.raises(UserInputError, match="NUL character"):
        registry.runs(where=f"tags.note == '{bad}'")


def test_big_integers_compare_on_every_backend(registry: Registry, spec: Doc) -> None:
    """A seed of 2**32 - 1 (archlab accepts it) compares as a 64-bit integer everywhere;
    PostgreSQL refused such a literal bound as a 32-bit INTEGER."""
    with registry.start_run(spec, {"seed": 4294967295, "big": 2**62}) as run:
        pass
    assert [r.id for r in registry.runs(where="config.seed == 4294967295")] == [run.id]
    assert [r.id for r in registry.runs(where="config.big >= 4611686018427387904")] == [run.id]
    assert registry.runs(where="cv.fold == 9223372036854775807") == []
    assert registry.runs(where="config.seed in (2147483648, 1)") == []
    with pytest.raises(UserInputError, match="integer out of range"):
        registry.runs(where="config.seed == 18446744073709551616")
    with pytest.raises(RegistryError, match="limit"):
        registry.runs(limit=2**64)


# --- where artifacts live, damaged and full registries, stale sweeps (issue 11) ----------------


def test_artifacts_are_found_from_any_directory(
    registry_url: str, isolated: Path, monkeypatch: pytest.MonkeyPatch, spec: Doc
) -> None:
    """An artifact recorded from one directory is read from another: beside a SQLite file, and
    for PostgreSQL under the root the registry records (``$ARCHLAB_ARTIFACTS`` when it was
    first opened to write), never under the current directory."""
    for name in ("a", "b", "shared"):
        (isolated / name).mkdir()
    monkeypatch.setenv("ARCHLAB_ARTIFACTS", str(isolated / "shared"))
    monkeypatch.chdir(isolated / "a")
    Path("w.bin").write_bytes(b"weights")
    with Registry(registry_url) as reg, reg.start_run(spec) as run:
        run.log_artifact("w.bin")
        root = reg.artifacts
    monkeypatch.delenv("ARCHLAB_ARTIFACTS")  # a teammate without the variable
    monkeypatch.chdir(isolated / "b")
    with Registry(registry_url, create=False) as reg:
        assert reg.artifacts == root and root.is_absolute()
        [artifact] = reg.get(run.id).artifacts
        assert (reg.artifacts / artifact.path).read_bytes() == b"weights"
    if registry_url.startswith("sqlite"):
        assert root == isolated / "artifacts"  # beside the database file
    else:
        assert root == isolated / "shared"  # recorded in the registry itself
    assert not (isolated / "a" / ".archlab").exists() and not (isolated / "b" / ".archlab").exists()


def test_a_registry_missing_a_table_is_refused_by_name(
    registry_url: str, raw_engine: Engine
) -> None:
    Registry(registry_url).close()
    with raw_engine.begin() as conn:
        conn.execute(text("DROP TABLE cv_aggregates"))
    with pytest.raises(RegistryError, match=r"lacks the table\(s\) cv_aggregates.*backup"):
        Registry(registry_url)


def test_a_full_disk_at_open_is_a_registry_error(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC while creating the lock file beside a new SQLite registry: a RegistryError (exit 2)
    with the system's message, not a raw OSError."""
    import errno

    def full(path: Any, *args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(migrate_module, "open", full, raising=False)
    with pytest.raises(RegistryError, match=r"cannot open the registry at .*No space left"):
        Registry(f"sqlite:///{isolated / 'r.db'}")


def test_a_live_run_marked_stale_ends_as_it_really_ends(
    registry: Registry, registry_url: str, spec: Doc
) -> None:
    """A sweep with no grace (``arch runs gc --stale --grace 0s``) marks a live run interrupted;
    its next heartbeat makes it running again, and it ends completed, with its CV group's
    aggregates, whatever the sweeps said meanwhile."""
    group = registry.start_cv(spec, k=2)
    handle = registry.start_run(spec, cv_group=group, fold=0)
    handle.log_metrics({"val_acc": 0.5}, step=0)
    handle.flush()
    with Registry(registry_url, grace=None) as sweeper:
        time.sleep(0.01)
        assert sweeper.mark_stale(0.0) == [handle.id]
        assert sweeper.get(handle.id).status == "interrupted"
        handle.flush()  # the run's next heartbeat
        assert sweeper.get(handle.id).status == "running"
        assert sweeper.get(handle.id).error is None
        time.sleep(0.01)
        assert sweeper.mark_stale(0.0) == [handle.id]
        handle.log_metrics({"val_acc": 0.75}, step=1)
        handle.end()
        run = sweeper.get(handle.id)
        assert (run.status, run.error, run.metrics) == ("completed", None, {"val_acc": 0.75})
        aggregate = sweeper.group(group.id).aggregates["val_acc"]
        assert (aggregate.n, aggregate.mean) == (1, 0.75)


def test_group_ids_work_where_run_ids_do(
    registry: Registry, raw_engine: Engine, spec: Doc, isolated: Path
) -> None:
    """``expand`` turns a CV group id into its folds; ``remove_group`` removes every fold (with
    its files) and the group; an unknown or ambiguous id is a RegistryError."""
    (isolated / "f.txt").write_text("x")
    group = registry.start_cv(spec, k=2)
    folds = []
    for fold in range(2):
        with registry.start_run(spec, cv_group=group, fold=fold) as run:
            run.log_metrics({"acc": 0.5 + fold / 10}, step=0)
            run.log_artifact(isolated / "f.txt")
        folds.append(run.id)
    with registry.start_run(spec) as single:
        pass
    assert registry.kind_of(group.id) == "group" and registry.kind_of(single.id) == "run"
    assert registry.expand([single.id, group.id, folds[0]]) == [single.id, *folds]
    with pytest.raises(RegistryError, match="no run or CV group 'nosuchid'"):
        registry.expand(["nosuchid"])
    with raw_engine.begin() as conn:  # a run and a group sharing an id (40 bits: rare, possible)
        conn.execute(text("UPDATE runs SET id = :g WHERE id = :r"), {"g": group.id, "r": single.id})
    with pytest.raises(RegistryError, match="both a run and a CV group"):
        registry.expand([group.id])
    with raw_engine.begin() as conn:
        conn.execute(text("UPDATE runs SET id = :r WHERE id = :g"), {"g": group.id, "r": single.id})
    deleted = registry.remove_group(group.id)
    assert sorted(deleted) == sorted(registry.artifacts / f for f in folds)
    assert [r.id for r in registry.runs()] == [single.id]
    with pytest.raises(RegistryError, match="no CV group"):
        registry.group(group.id)


def test_dependents_are_the_runs_pointing_to_a_run(registry: Registry, spec: Doc) -> None:
    """A DynamicViT student records its teacher (``config.teacher`` / ``config.teacher_run``), an
    eval run the run it evaluates (``tags.evaluates``): removing those would leave them dangling."""
    with registry.start_run(spec) as teacher:
        pass
    group = registry.start_cv(spec, k=2)
    with registry.start_run(spec, cv_group=group, fold=0) as fold_teacher:
        pass
    with registry.start_run(spec, {"teacher": teacher.id, "teacher_run": teacher.id}) as student:
        pass
    with registry.start_run(spec, {"teacher": group.id, "teacher_run": fold_teacher.id}) as cv:
        pass
    with registry.start_run(spec, kind="eval", tags={"evaluates": teacher.id}) as evaluation:
        pass
    assert registry.dependents([teacher.id]) == sorted(
        [(student.id, "teacher", teacher.id), (evaluation.id, "evaluates", teacher.id)]
    )
    assert registry.dependents([fold_teacher.id, group.id]) == sorted(
        [(cv.id, "teacher", group.id), (cv.id, "teacher", fold_teacher.id)]
    )
    assert registry.dependents([teacher.id, student.id, evaluation.id]) == []


# ------------------------------------------------------------------------- metric directions


def _runs_with(registry: Registry, spec: Doc, metric: str, *series: list[float]) -> list[str]:
    """One completed run per series of ``metric`` values (steps 0, 1, ...), in order."""
    ids = []
    for values in series:
        with registry.start_run(spec) as run:
            for step, value in enumerate(values):
                run.log_metrics({metric: value}, step=step)
        ids.append(run.id)
    return ids


def test_best_of_a_latency_is_the_fastest_run(registry: Registry, spec: Doc) -> None:
    """``latency_ms`` has no word of the old guess (loss, err, perplexity) but is lower-better."""
    fast, slow = _runs_with(registry, spec, "latency_ms", [9.0, 4.0, 5.0], [12.0, 8.0])
    assert registry.metric_direction("latency_ms") == "min"
    assert registry.get(fast).summaries["latency_ms"].best == 4.0
    assert [r.id for r in registry.best("latency_ms")] == [fast]
    assert [r.id for r in registry.rank("latency_ms", limit=None)] == [fast, slow]


def test_a_declared_direction_is_kept_and_ranks_the_runs(registry: Registry, spec: Doc) -> None:
    """``score`` would be maximised by its name; declared ``min``, every best value, ``best`` and
    ``rank`` take lower as better, in this registry object and any other opened later."""
    assert registry.declare_metrics({"score": "min"}) == {"score": "min"}
    low, high = _runs_with(registry, spec, "score", [2.0, 1.0], [3.0, 1.5])
    assert (
        registry.get(low).summaries["score"].best_step,
        registry.get(high).summaries["score"].best,
    ) == (1, 1.5)
    assert [r.id for r in registry.best("score")] == [low]
    assert [r.id for r in registry.best("score", group_by="spec")] == [low]
    assert [(e.id, e.value) for e in registry.rank("score", limit=None)] == [
        (low, 1.0),
        (high, 1.5),
    ]
    with Registry(registry.url) as again:
        assert again.metric_direction("score") == "min"
        assert [r.id for r in again.best("score")] == [low]
        # declaring it again the same way is fine; the other way is refused, recording nothing
        assert again.declare_metrics({"score": "min", "new_metric": "min"})["new_metric"] == "min"
        with pytest.raises(RegistryError, match=r"'score' is recorded .* as 'min'.*--max"):
            again.declare_metrics({"score": "max"})
        with pytest.raises(UserInputError, match=r"'min' .* or 'max' .* not 'lowest'"):
            again.declare_metrics({"other": "lowest"})
        assert again.metric_direction("score") == "min"


def test_a_direction_given_to_best_and_rank_overrides_the_metrics(
    registry: Registry, spec: Doc
) -> None:
    """Ranked the other way, a run counts with its highest (or lowest) point, not with its best
    value in the metric's own direction."""
    low, high = _runs_with(registry, spec, "val_loss", [2.0, 1.0], [3.0, 1.5])
    assert [r.id for r in registry.best("val_loss")] == [low]
    assert [r.id for r in registry.best("val_loss", direction="max")] == [high]
    assert [r.id for r in registry.best("val_loss", group_by="spec", direction="max")] == [high]
    ranked = registry.rank("val_loss", limit=None, direction="max")
    assert [(e.id, e.value) for e in ranked] == [(high, 3.0), (low, 2.0)]
    with pytest.raises(UserInputError, match=r"'min' .* or 'max'"):
        registry.best("val_loss", direction="down")
