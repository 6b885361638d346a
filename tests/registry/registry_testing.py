"""Helpers for the registry tests: row counts and metric histories read back."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from archlab.registry import Registry


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def history(registry: Registry, run_id: str, name: str) -> list[tuple[int, float]]:
    return [(step, value) for step, _, value, _ in registry.metric_history(run_id, name)]
