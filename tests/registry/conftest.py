"""Fixtures of the registry tests: every test that takes ``registry_url`` runs on both backends.

- ``registry_url``: a brand-new, empty registry URL, once on SQLite (a file in ``tmp_path``) and
  once on PostgreSQL. The PostgreSQL variant needs ``ARCHLAB_TEST_POSTGRES`` (a URL such as
  ``postgresql://postgres@127.0.0.1:5432/test``): the session creates a database of its own on that
  server (dropped at the end), and each test starts from an empty ``public`` schema (no tables, no
  ``alembic_version``). Unset or empty, the PostgreSQL variants are skipped; set but unreachable,
  they fail loudly: CI sets it on purpose.
- ``registry``: a ``Registry`` opened on ``registry_url`` with its artifacts in ``tmp_path``, closed
  after the test. Both run the test from ``tmp_path`` with no ``ARCHLAB_*`` variables, so nothing
  lands in the repository and provenance sees no git repo unless the test makes one.
- ``spec``: a fresh minimal ViT spec document to start runs with.
- ``run_script(name, *args)``: runs ``tests/registry/scripts.py`` in a fresh interpreter (for
  SIGTERM, SIGKILL and many-process tests), as ``subprocess.Popen``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError, ProgrammingError

from archlab.registry import Registry
from archlab.registry.provenance import pid_alive

PG_ENV = "ARCHLAB_TEST_POSTGRES"
SCRIPTS = Path(__file__).with_name("scripts.py")
_SESSION_DB = re.compile(r"^archlab_test_(\d+)_[0-9a-f]{6}$")

Doc = dict[str, Any]


def postgres_base_url() -> str | None:
    """The server to test against, or None (unset or empty: skip the PostgreSQL variants)."""
    return os.environ.get(PG_ENV) or None


def sqlalchemy_url(url: str | URL) -> URL:
    """``url`` with the psycopg 3 driver spelled out (what the registry itself uses)."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of this test session's own on the ``ARCHLAB_TEST_POSTGRES`` server."""
    base = postgres_base_url()
    if base is None:
        pytest.skip(f"{PG_ENV} is unset or empty: PostgreSQL variants skipped")
    admin = create_engine(sqlalchemy_url(base), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        admin.dispose()
        pytest.fail(
            f"{PG_ENV}={base!r} but that PostgreSQL server is unreachable: {exc.orig}\n"
            f"start it, or set {PG_ENV}= (empty) to skip the PostgreSQL tests",
            pytrace=False,
        )
    name = f"archlab_test_{os.getpid()}_{secrets.token_hex(3)}"
    own = True
    try:
        with admin.connect() as conn:
            # databases left behind by sessions that died (this host's pids only)
            for (old,) in conn.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE 'archlab_test_%'")
            ):
                match = _SESSION_DB.match(old)
                if match and not pid_alive(int(match.group(1))):
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{old}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except ProgrammingError:  # no CREATEDB right: share the given database (tests reset it)
        own = False
    url = make_url(base).set(database=name) if own else make_url(base)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        if own:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def reset_postgres(url: str) -> None:
    """Drop everything of the database at ``url`` (tables, alembic_version, sequences)."""
    engine = create_engine(sqlalchemy_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test from ``tmp_path``, with no ``ARCHLAB_*`` registry variables."""
    for name in ("ARCHLAB_REGISTRY", "ARCHLAB_ARTIFACTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, isolated: Path) -> str:
    """A new, empty registry's URL: SQLite, then PostgreSQL (see the module docstring)."""
    if request.param == "sqlite":
        return f"sqlite:///{isolated / 'registry.db'}"
    url: str = request.getfixturevalue("postgres_database")
    reset_postgres(url)
    return url


@pytest.fixture
def registry(registry_url: str, isolated: Path) -> Iterator[Registry]:
    reg = Registry(registry_url, artifacts=isolated / "artifacts")
    try:
        yield reg
    finally:
        reg.close()


@pytest.fixture
def raw_engine(registry_url: str) -> Iterator[Engine]:
    """A plain SQLAlchemy engine on the test's database, to look under the registry's API."""
    engine = create_engine(sqlalchemy_url(registry_url))
    try:
        yield engine
    finally:
        engine.dispose()


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


@pytest.fixture
def run_script(isolated: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``scripts.py MODE ARGS...`` in a fresh interpreter (text pipes); all are reaped."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-W", "error", str(SCRIPTS), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=isolated,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(Exception):
            proc.communicate(timeout=30)


@pytest.fixture
def spec(minimal_vit: Callable[[], Doc]) -> Doc:
    """A fresh minimal ViT spec document (``minimal_vit()``)."""
    return minimal_vit()
