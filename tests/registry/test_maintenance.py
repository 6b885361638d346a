"""``archlab.registry.maintenance`` from Python: what removing runs takes and what refuses it,
tagging a CV group's folds, orphan artifact folders with their sizes. Tests taking ``registry``
run on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from archlab.registry import Registry, RegistryError, maintenance

Doc = dict[str, Any]


@pytest.fixture
def spec(minimal_vit: Callable[[], Doc]) -> Doc:
    return minimal_vit()


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
