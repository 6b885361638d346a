"""``archlab.registry.maintenance`` from Python: what removing runs takes and what refuses it,
tagging a CV group's folds, orphan artifact folders with their sizes; and through the
``Registry``: removing a run or a CV group with its rows and files, group ids where run ids go,
and the runs that point to a run. Tests taking ``registry`` run on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from registry_testing import count
from sqlalchemy import Engine, text

from archlab.registry import Registry, RegistryError, maintenance
from archlab.registry.models import MetricRow, MixupRow, RunRow

Doc = dict[str, Any]


def test_a_removal_plan_names_runs_groups_and_dangling_pointers(
    registry: Registry, spec: Doc
) -> None:
    with registry.start_run(spec) as teacher:
        pass
    with registry.start_run(spec, {"teacher": teacher.id}) as student:
        pass
    group = registry.start_cv(spec, k=2, seed=0)
    for fold in (0, 1):
        with registry.start_run(spec, cv_group=group, fold=fold):
            pass
    folds = registry.group(group.id).runs
    plan = maintenance.plan_removal(registry, [teacher.id, group.id, teacher.id])
    assert [r.id for r in plan.runs] == [teacher.id, *folds]
    assert plan.groups == [group.id] and plan.running == []
    assert plan.dangling == [f"run {student.id} (teacher {teacher.id})"]
    with pytest.raises(RegistryError, match="other runs point to what would be removed"):
        plan.refuse()
    plan.refuse(force=True)
    assert maintenance.plan_removal(registry, [student.id, teacher.id]).dangling == []
    with pytest.raises(RegistryError, match="'nosuchid'"):
        maintenance.plan_removal(registry, [teacher.id, "nosuchid"])

    maintenance.remove(registry, plan)
    assert [r.id for r in registry.runs()] == [student.id]
    with pytest.raises(RegistryError):
        registry.group(group.id)


def test_a_running_run_is_refused_unless_forced(registry: Registry, spec: Doc) -> None:
    running = registry.start_run(spec)
    try:
        plan = maintenance.plan_removal(registry, [running.id])
        assert plan.running == [running.id]
        with pytest.raises(RegistryError, match="still running"):
            plan.refuse()
        plan.refuse(force=True)
    finally:
        running.end()


def test_tag_a_run_or_every_fold(registry: Registry, spec: Doc) -> None:
    with registry.start_run(spec) as alone:
        pass
    group = registry.start_cv(spec, k=2, seed=0)
    for fold in (0, 1):
        with registry.start_run(spec, cv_group=group, fold=fold):
            pass
    assert maintenance.tag(registry, alone.id, note="x") == [alone.id]
    folds = maintenance.tag(registry, group.id, note="cv", seed=3)
    assert folds == registry.group(group.id).runs
    assert [dict(registry.get(f).tags) for f in folds] == [{"note": "cv", "seed": "3"}] * 2
    assert dict(registry.get(alone.id).tags) == {"note": "x"}


def test_orphans_with_their_sizes(registry: Registry, spec: Doc, tmp_path: Path) -> None:
    assert maintenance.orphans(registry) == {}
    with registry.start_run(spec) as run:
        pass
    folder = registry.artifacts / "abcd1234"  # named like a run id, of no run
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"x" * 1000)
    (folder / "sub" / "b.bin").write_bytes(b"y" * 24)
    (folder / "link").symlink_to(folder / "a.bin")  # not counted twice
    (registry.artifacts / run.id).mkdir(exist_ok=True)  # a live run's folder: no orphan
    assert maintenance.orphans(registry) == {folder: 1024}
    assert maintenance.tree_size(folder / "sub") == 24


# --- removing runs and groups, what points to a run -----------------------------------------------


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
