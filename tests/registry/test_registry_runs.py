"""Starting runs (``Registry.start_run``): kinds, config and tags, provenance, one stored spec per
architecture with each run's own spec name, text no backend stores, and 64-bit integers. Tests taking ``registry`` run on SQLite and PostgreSQL."""

from __future__ import annotations

import getpass
import hashlib
import json
import math
import os
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from registry_testing import count
from sqlalchemy import Engine, select

import archlab
from archlab.errors import UserInputError
from archlab.registry import Registry, RegistryError
from archlab.registry import provenance as provenance_module
from archlab.registry.models import RunRow, SpecRow
from archlab.specs import canonical_form, canonical_json

Doc = dict[str, Any]


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
