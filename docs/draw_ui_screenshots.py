"""Screenshots of ``arch ui`` for the README: docs/images/ui-*.png.

    python docs/draw_ui_screenshots.py [--out docs/images] [--epochs 5] [--keep DIR]

Fills a registry with real small trainings of ``specs/vit-tiny-digits.json`` on scikit-learn's
digits (hold-out runs at three learning rates, a 3-fold CV group, a run with mixup; a few
minutes on two cores), serves it with ``arch ui`` on a free loopback port, and photographs the
pages with the system's Chromium through Playwright (``apt-get install chromium``; ``ARCHLAB_CHROMIUM`` names another binary):
the runs page, a run with its curves, and the CV group and compare pages where the server has
them. 1280 x 800, the size of a laptop's browser window.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from archlab.registry import Registry
from archlab.runners.config import TrainConfig
from archlab.runners.train import train

ROOT = Path(__file__).resolve().parents[1]
VIT = ROOT / "specs" / "vit-tiny-digits.json"
SIZE = {"width": 1280, "height": 800}


def fill(folder: Path, epochs: int) -> dict[str, Any]:
    """The demo registry in ``folder``: its URL and the ids of its runs (kept in runs.json, so
    that ``--keep`` with a folder filled before photographs it again without training)."""
    saved = folder / "runs.json"
    if saved.exists():
        return dict(json.loads(saved.read_text()))
    url = f"sqlite:///{folder / 'registry.db'}"
    base: dict[str, Any] = {"data": "digits", "epochs": epochs, "warmup": 1, "lr": 2e-3}
    with Registry(url, artifacts=folder / "artifacts") as registry:
        for lr in (1e-3, 4e-3):
            train(VIT, TrainConfig(**{**base, "lr": lr}, tags={"study": "lr"}), registry)
        plain = train(VIT, TrainConfig(**base, tags={"team": "vision"}), registry).runs[0]
        cv = train(VIT, TrainConfig(**base, folds=3, tags={"study": "cv"}), registry)
        mixed = train(VIT, TrainConfig(**base, mixup=0.2, tags={"team": "vision"}), registry)
        group = registry.get(cv.runs[0]).cv.group  # type: ignore[union-attr]
    runs = {"url": url, "plain": plain, "group": group, "mixed": mixed.runs[0]}
    saved.write_text(json.dumps(runs))
    return runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(url: str) -> tuple[subprocess.Popen[bytes], str]:
    """``arch ui`` on a free port; the process and its base URL once it listens."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])}
    cmd = [sys.executable, "-m", "archlab", "ui", "--registry", url, "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    for _ in range(600):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.terminate()
    raise SystemExit("arch ui did not start")


def shoot(base: str, runs: dict[str, Any], out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    binary = os.environ.get("ARCHLAB_CHROMIUM") or shutil.which("chromium")
    if binary is None:
        raise SystemExit("no Chromium: apt-get install chromium, or set ARCHLAB_CHROMIUM")
    pages = [
        ("ui-runs.png", "/", None),
        ("ui-run.png", f"/runs/{runs['plain']}", "#curves"),
        ("ui-group.png", f"#runs tr[data-id='{runs['group']}'] a[href^='/groups/']", ".curves"),
        ("ui-compare.png", f"/compare?ids={runs['plain']}&ids={runs['mixed']}", ".curves"),
    ]
    saved = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        page = browser.new_page(viewport=SIZE, device_scale_factor=1)
        for name, path, charts in pages:
            if path.startswith("#"):  # a link on the runs page, there once the server has it
                page.goto(base + "/")
                link = page.query_selector(path)
                if link is None:
                    print(f"no link to the group's page on the runs page, no {name}")
                    continue
                path = link.get_attribute("href") or "/"
            answer = page.goto(base + path)
            if answer is None or answer.status != 200:
                print(f"{path}: {answer.status if answer else 'no answer'}, no {name}")
                continue
            if charts and page.query_selector(f"{charts}[data-runs]"):
                page.wait_for_selector(f"{charts}[data-drawn='1']", timeout=15_000)
                # the curves sit below the run's facts: show the metrics and the charts
                page.eval_on_selector(charts, "e => e.closest('section').scrollIntoView()")
                page.evaluate("window.scrollBy(0, -12)")
            page.screenshot(path=out / name)
            saved.append(out / name)
        browser.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="keep the demo registry in this folder")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="archlab-ui-"))
    folder.mkdir(parents=True, exist_ok=True)
    runs = fill(folder, args.epochs)
    proc, base = serve(runs["url"])
    try:
        for path in shoot(base, runs, args.out):
            print(path)
    finally:
        proc.terminate()
        proc.wait()
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
