"""Keeping a registry tidy, for ``arch runs rm / tag / gc`` and Python users alike: what removing
runs and CV groups would take (and what refuses it), tagging a run or a group's folds, and the
orphan artifact folders with their sizes.

Imports no torch, rich or click.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from archlab.registry.records import Run
    from archlab.registry.store import Registry


@dataclass(frozen=True)
class Removal:
    """What removing some ids takes: the runs (a CV group's id standing for its folds), the CV
    groups themselves, the runs among them still running, and the pointers that would dangle
    (``run R (teacher|evaluates T)``: runs outside the removal that point into it)."""

    runs: list[Run]
    groups: list[str]
    running: list[str]
    dangling: list[str]

    def refuse(self, force: bool = False) -> None:
        """Raise ``RegistryError`` unless ``force``: runs still running, or runs outside the
        removal pointing into it."""
        from archlab.registry import RegistryError

        if force:
            return
        if self.running:
            raise RegistryError(
                f"run(s) {', '.join(self.running)} still running: stop them first, mark them "
                "with `arch runs gc --stale` if their process is gone, or pass --force"
            )
        if self.dangling:
            raise RegistryError(
                f"other runs point to what would be removed: {'; '.join(self.dangling)}. Their "
                "pointers would dangle (a student's teacher could no longer be checked or "
                "reused): remove those runs too, or pass --force"
            )


def plan_removal(registry: Registry, idents: Sequence[str]) -> Removal:
    """The ``Removal`` of run and CV group ids ``idents``; an unknown id raises
    ``RegistryError``. Nothing is removed."""
    unique = list(dict.fromkeys(idents))
    groups = [i for i in unique if registry.kind_of(i) == "group"]  # every id must exist first
    found = registry.compare(registry.expand(unique))
    running = [r.id for r in found if r.status == "running"]
    pointing = registry.dependents([*(r.id for r in found), *groups])
    dangling = [f"run {run} ({how} {target})" for run, how, target in pointing]
    return Removal(found, groups, running, dangling)


def remove(registry: Registry, removal: Removal) -> list[Path]:
    """Remove the runs and CV groups of ``removal`` with their artifact files; returns the
    folders and files deleted."""
    deleted: list[Path] = []
    for run in removal.runs:
        deleted += registry.remove(run.id)
    for group_id in removal.groups:
        deleted += registry.remove_group(group_id)
    return deleted


def tag(registry: Registry, ident: str, **tags: Any) -> list[str]:
    """Set ``tags`` on run ``ident``, or on every fold of CV group ``ident``; returns the run ids
    tagged."""
    ids = registry.expand([ident])
    for each in ids:
        registry.tag(each, **tags)
    return ids


def tree_size(path: Path) -> int:
    """The bytes of the files under ``path`` (symbolic links not followed)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def orphans(registry: Registry) -> dict[Path, int]:
    """The orphan artifact folders (``Registry.orphan_artifacts``) with their sizes in bytes."""
    return {path: tree_size(path) for path in registry.orphan_artifacts()}
