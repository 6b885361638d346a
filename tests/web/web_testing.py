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


SVG_SCRIPT = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8">'
    "<script>alert(1)</script><rect width='8' height='8' fill='red'/></svg>"
)


def fill_pages(folder: Path) -> dict[str, Any]:
    """A registry for the CV group, compare and pictures pages: two 2-fold CV groups trained on
    the same data and folds (B with another learning rate, a hostile spec name and tags), a
    3-fold group on the same data (it does not pair with them), the embedding map ``arch embed
    --method pca`` records for a run of group A, and a hand-written run recording a PNG and an
    SVG that holds a script, under hostile names."""
    from click.testing import CliRunner
    from PIL import Image

    from archlab.cli.main import cli

    url = f"sqlite:///{folder / 'registry.db'}"
    data = images(folder)
    with Registry(url, artifacts=folder / "artifacts") as registry:
        a = train(VIT, config(data, folds=2, epochs=2), registry)
        b = train(
            hostile_spec(folder),
            config(data, folds=2, epochs=2, lr=5e-3, tags={"note": HOSTILE}),
            registry,
        )
        three = train(VIT, config(data, folds=3, epochs=1), registry)
        groups = [registry.get(r.runs[0]).cv.group for r in (a, b, three)]  # type: ignore[union-attr]
        pictures = folder / "pictures"
        pictures.mkdir()
        png = pictures / "patches.png"
        Image.new("RGB", (4, 4), (200, 30, 30)).save(png)
        svg = pictures / f"{HOSTILE[:8]}map.svg"
        svg.write_text(SVG_SCRIPT)
        doc = json.loads(VIT.read_text())
        with registry.start_run(doc, {"note": HOSTILE}, kind="eval") as handle:
            handle.log_artifact(png, "kept-patches", copy=True)
            handle.log_artifact(svg, "relevance-map", copy=True)
        drawn = str(handle.id)
    result = CliRunner().invoke(
        cli,
        ["embed", a.runs[0], "--method", "pca", "-o", str(folder / "map.png"), "--registry", url],
    )
    assert result.exit_code == 0, result.output
    with Registry(url, create=False, grace=None) as registry:
        [embedded] = [r.id for r in registry.runs("tags.evaluation == 'embed'")]
    return {
        "url": url,
        "a": groups[0],
        "b": groups[1],
        "three": groups[2],
        "folds_a": list(a.runs),
        "folds_b": list(b.runs),
        "drawn": drawn,
        "embedded": embedded,
    }
