"""Helpers of the ``arch ui`` tests: a registry filled by real ``archlab.runners.train.train``
runs on tiny random images (each a fraction of a second), and a client for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from archlab.registry import Registry
from archlab.runners.config import TrainConfig
from archlab.runners.train import train

ROOT = Path(__file__).resolve().parents[2]
VIT = ROOT / "specs" / "vit-tiny-digits.json"
HOSTILE = "<script>alert(1)</script>\"'&"
LOOPBACK = "http://127.0.0.1:8765"


def images(folder: Path, n: int = 60, classes: int = 3) -> str:
    """An ``npz:`` source of ``n`` random 8 x 8 images over ``classes`` classes (seeded)."""
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 8, 8), dtype=np.float32)
    np.savez(folder / "small.npz", x=x, y=np.arange(n) % classes)
    return f"npz:{folder / 'small.npz'}"


def config(data: str, **changes: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "data": data,
        "epochs": 2,
        "warmup": 0.5,
        "batch_size": 64,
        "lr": 2e-3,
        "device": "cpu",
    }
    return TrainConfig(**{**base, **changes})


def hostile_spec(folder: Path) -> Path:
    """The tiny ViT under a name holding markup and quotes."""
    doc = json.loads(VIT.read_text())
    doc["name"] = f"vit {HOSTILE}"
    path = folder / "hostile.json"
    path.write_text(json.dumps(doc))
    return path


def fill(folder: Path) -> dict[str, Any]:
    """A registry in ``folder``: a hold-out run, a 2-fold CV group, a run with mixup, and a run
    whose spec name, tags and config hold hostile text. Returns its URL and the ids."""
    url = f"sqlite:///{folder / 'registry.db'}"
    data = images(folder)
    with Registry(url, artifacts=folder / "artifacts") as registry:
        plain = train(VIT, config(data, tags={"team": "vision"}), registry).runs[0]
        cv = train(VIT, config(data, folds=2, epochs=1), registry)
        mixed = train(VIT, config(data, mixup=0.2, epochs=1), registry).runs[0]
        hostile = train(
            hostile_spec(folder),
            config(data, epochs=1, name=HOSTILE, tags={"note": HOSTILE, HOSTILE: "x"}),
            registry,
        ).runs[0]
        group = registry.get(cv.runs[0]).cv.group  # type: ignore[union-attr]
    return {
        "url": url,
        "plain": plain,
        "folds": list(cv.runs),
        "group": group,
        "mixed": mixed,
        "hostile": hostile,
        "db": folder / "registry.db",
        "artifacts": folder / "artifacts",
    }
