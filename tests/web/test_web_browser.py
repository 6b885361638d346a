"""``arch ui`` in a real browser: the system's Chromium, driven by Playwright, against a real
``arch ui`` server (a subprocess on a free loopback port) over the registry of real training runs
of ``web_testing.fill``. Each page is loaded, its scripts run, and every page ends with no console
error and no Content-Security-Policy violation.

Skipped without the Playwright package or a Chromium binary, except under CI (``CI=true``), where
``.ci/run`` installs Chromium from the system packages and a missing browser is a failure."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from web_testing import HOSTILE, ROOT, VIT

from archlab.registry import Registry

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser

CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Run before any page script: every uPlot chart records on its container how many x values it
# was drawn with (data-test-points), and CSP violations are kept for the test to read.
HOOKS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + e.blockedURI);
});
(function () {
  var real;
  Object.defineProperty(window, "uPlot", {
    configurable: true,
    get: function () { return real; },
    set: function (U) {
      function Counted(opts, data, target) {
        var chart = new U(opts, data, target);
        target.setAttribute("data-test-points", String(data[0].length));
        return chart;
      }
      Object.assign(Counted, U);
      real = Counted;
    },
  });
})();
"""


def chromium() -> str | None:
    """The browser binary: ``$ARCHLAB_CHROMIUM``, else the first Chromium on the PATH."""
    given = os.environ.get("ARCHLAB_CHROMIUM")
    if given:
        return given
    return next((p for p in map(shutil.which, CHROMIUM) if p), None)


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if chromium() is None:
        return "no Chromium binary found (apt-get install chromium, or set ARCHLAB_CHROMIUM)"
    return None


# decided before any fixture builds the registry; under CI the module fails to collect instead
if (why := missing()) is not None:
    if os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail(f"{why}: .ci/run installs Chromium and make setup Playwright")
    pytest.skip(why, allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``arch ui --registry URL --port P`` in a subprocess, on 127.0.0.1, until ``stop``."""

    def __init__(self, url: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "archlab", "ui", "--registry", url, "--port", str(self.port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.wait()

    def wait(self, seconds: float = 30.0) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read() if self.proc.stdout else ""
                raise RuntimeError(f"arch ui exited {self.proc.returncode}:\n{out}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"arch ui did not listen on port {self.port} in {seconds} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(filled: dict[str, Any]) -> Iterator[Server]:
    s = Server(filled["url"])
    yield s
    s.stop()


class Watched:
    """A page with its console errors, uncaught exceptions and dialogs recorded."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.context = browser.new_context(base_url=base, viewport={"width": 1280, "height": 800})
        self.context.add_init_script(HOOKS)
        self.page: Page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", self.console)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

        def dialog(d: Any) -> None:
            self.dialogs.append(d.message)
            d.dismiss()

        self.page.on("dialog", dialog)

    def console(self, message: Any) -> None:
        # the browser's own request for /favicon.ico (the pages name no icon) is not the page's
        if message.type == "error" and not message.location["url"].endswith("/favicon.ico"):
            self.errors.append(f"{message.text} ({message.location['url']})")

    def clean(self) -> None:
        """No console error, script error, CSP violation or dialog on the page so far."""
        csp = self.page.evaluate("window.__csp || []")
        assert not self.errors and not csp and not self.dialogs, (self.errors, csp, self.dialogs)


@pytest.fixture
def watched(browser: Browser, server: Server) -> Iterator[Watched]:
    w = Watched(browser, server.base)
    yield w
    w.clean()
    w.context.close()


def row_ids(page: Page) -> list[str]:
    return page.eval_on_selector_all("#runs tbody tr", "rows => rows.map(r => r.dataset.id)")


def charts(page: Page, box: str = "#curves") -> dict[str, int]:
    """Wait for the curves of ``box`` to be drawn; each chart's family -> series count."""
    page.wait_for_selector(f"{box}[data-drawn='1']")
    drawn = page.eval_on_selector_all(
        f"{box} .chart",
        """els => els.map(e => [e.dataset.metric, Number(e.dataset.series),
                              e.querySelectorAll('canvas').length])""",
    )
    assert all(canvases >= 1 for _, _, canvases in drawn), drawn
    return {metric: series for metric, series, _ in drawn}


def column(page: Page, name: str) -> list[float]:
    """The numbers in the runs table's column headed ``name`` (its first number per cell)."""
    cells = page.eval_on_selector_all(
        "#runs",
        """([t], name) => {
             const i = [...t.tHead.rows[0].cells].findIndex(c => c.innerText.trim().startsWith(name));
             return [...t.tBodies[0].rows].map(r => r.cells[i].innerText);
           }""",
        name,
    )
    return [float(re.match(r"-?[\d.]+(?:e-?\d+)?", c.strip()).group()) for c in cells]  # type: ignore[union-attr]


def test_the_runs_page_filters_with_where_and_shows_errors_with_their_caret(
    watched: Watched, filled: dict[str, Any]
) -> None:
    page = watched.page
    page.goto("/?group=0")
    everything = row_ids(page)
    assert set(everything) == {
        filled["plain"],
        filled["mixed"],
        filled["hostile"],
        *filled["folds"],
    }
    page.fill("#where", "tags.team == 'vision'")
    page.click("form.filter button[type=submit]")
    page.wait_for_url(re.compile(r"where="))
    assert row_ids(page) == [filled["plain"]]
    assert page.input_value("#where") == "tags.team == 'vision'"
    assert page.inner_text("#count").startswith("1 run match")

    page.fill("#where", "metrics.val_acc > and status == 'completed'")
    page.press("#where", "Enter")
    page.wait_for_selector("#query-error")
    shown = page.inner_text("#query-error")
    assert shown.startswith("error: expected a value") and "at column 19" in shown
    lines = shown.splitlines()
    assert lines[-1].strip() == "^" and lines[-1].index("^") == lines[-2].index(">") + 2
    assert page.query_selector("#runs") is None  # no rows under an error
    # the browser logs the page's own 400 answer as a failed resource: that is the page working
    watched.errors[:] = [e for e in watched.errors if "status of 400" not in e]


def test_a_click_on_a_column_header_sorts_by_it(watched: Watched) -> None:
    page = watched.page
    page.goto("/?group=0")
    page.click("#runs thead a:text-is('val_loss')")
    page.wait_for_url(re.compile(r"sort=-metrics\.val_loss"))
    down = column(page, "val_loss")
    assert len(down) == 5 and down == sorted(down, reverse=True)
    page.click("#runs thead a:text-is('val_loss')")
    page.wait_for_url(re.compile(r"sort=metrics\.val_loss"))
    assert column(page, "val_loss") == sorted(down)


def test_a_runs_page_draws_one_chart_per_metric_family(
    watched: Watched, filled: dict[str, Any]
) -> None:
    page = watched.page
    page.goto("/")
    page.click(f"#runs a[href='/runs/{filled['plain']}']")
    page.wait_for_url(f"**/runs/{filled['plain']}")
    # train_loss and val_loss share the loss chart; val_acc, lr, samples_per_s one each
    assert charts(page) == {"loss": 2, "acc": 1, "lr": 1, "samples_per_s": 1}
    points = page.eval_on_selector("#curves .chart[data-metric=loss]", "e => e.dataset.testPoints")
    assert points == "2"  # two epochs
    assert page.inner_text("#run-status") == "completed"


def test_a_hostile_run_shows_its_markup_as_text_and_runs_none_of_it(
    watched: Watched, filled: dict[str, Any]
) -> None:
    page = watched.page
    page.goto("/")
    assert HOSTILE in page.inner_text("#runs")
    page.goto(f"/runs/{filled['hostile']}")
    charts(page)
    text = page.inner_text("main")
    assert f"vit {HOSTILE}" in text and f"note\t{HOSTILE}" in text.replace("tags.", "")
    assert page.evaluate("document.querySelectorAll('main script').length") == 0
    assert not watched.dialogs


def test_compare_shows_two_runs_side_by_side(watched: Watched, filled: dict[str, Any]) -> None:
    page = watched.page
    a, b = filled["plain"], filled["mixed"]
    answer = page.goto(f"/compare?ids={a}&ids={b}")
    assert answer is not None and answer.status == 200
    text = page.inner_text("main")
    assert a in text and b in text
    drawn = charts(page, ".curves[data-runs]")
    assert drawn.get("loss") == 4  # train_loss and val_loss of each run


def test_a_cv_group_page_draws_every_folds_curves(watched: Watched, filled: dict[str, Any]) -> None:
    page = watched.page
    page.goto("/")
    link = page.query_selector(f"#runs tr[data-id='{filled['group']}'] a[href^='/groups/']")
    assert link is not None, "the runs page links the CV group to its page"
    with page.expect_navigation() as opened:
        link.click()
    assert opened.value is not None and opened.value.status == 200
    text = page.inner_text("main")
    assert all(f in text for f in filled["folds"])
    drawn = charts(page, ".curves[data-runs]")
    assert drawn.get("loss", 0) >= 2 * len(filled["folds"])  # train and val loss of every fold


def test_a_running_runs_curves_grow_without_a_reload(browser: Browser, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    spec = json.loads(VIT.read_text())
    with (
        Registry(url, artifacts=tmp_path / "artifacts") as registry,
        registry.start_run(spec, {"epochs": 3}) as run,
    ):
        run.log_metrics({"val_loss": 1.0, "train_loss": 1.2}, step=1)
        run.flush()
        server = Server(url)
        w = Watched(browser, server.base)
        try:
            page = w.page
            page.goto(f"/runs/{run.id}")
            assert charts(page) == {"loss": 2}
            assert page.inner_text("#run-status") == "running"
            navigations: list[str] = []
            page.on("framenavigated", lambda f: navigations.append(f.url))
            loss = "#curves .chart[data-metric=loss]"
            assert page.eval_on_selector(loss, "e => e.dataset.testPoints") == "1"
            run.log_metrics({"val_loss": 0.5, "train_loss": 0.7}, step=2)
            run.flush()
            page.wait_for_selector(f"{loss}[data-test-points='2']")
            run.end()
            page.wait_for_selector("#run-status:text-is('completed')")
            assert not navigations  # redrawn in place, never reloaded
            w.clean()
        finally:
            w.context.close()
            server.stop()
