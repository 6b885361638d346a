"""The compare page of ``arch ui`` and ``/api/compare`` over real runs: runs and CV groups side
by side as ``arch runs compare`` gives them, the diff of ``arch runs diff``, two groups' paired
statistics of ``Registry.compare_groups`` and their refusals, curves with one series per run and
metric, the runs page's Compare form, hostile values escaped."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from archlab.registry import Registry, views
from archlab.registry.comparison import verdict


def test_two_runs_side_by_side_with_their_diff(
    pages_client: TestClient, paired: dict[str, Any]
) -> None:
    a, b = paired["folds_a"][0], paired["folds_b"][0]
    page = pages_client.get("/compare", params=[("ids", a), ("ids", b)])
    assert page.status_code == 200
    with Registry(paired["url"], create=False, grace=None) as registry:
        found = views.comparison(registry, [a, b])
        lines = [views.change_line(c) for c in registry.diff(a, b)]
    for name, values in found.rows:
        marked = "differs" if views.differs(values) else ""
        assert re.search(
            rf"<tr{' class=.differs.' if marked else ''}><th>{re.escape(name)}</th>", page.text
        )
    assert '<tr class="differs"><th>config.lr</th><td>0.002</td><td>0.005</td></tr>' in page.text
    shown = re.search(r'<pre class="diff" id="diff">(.*?)</pre>', page.text, re.S)
    assert shown is not None and html.unescape(shown.group(1)).splitlines() == lines
    assert "config.lr: 0.002 -> 0.005" in lines
    assert f'data-runs="{a},{b}"' in page.text
    assert "paired statistics" not in page.text  # runs, not two groups


def test_the_compare_endpoint_counts_one_series_per_run_and_metric(
    pages_client: TestClient, paired: dict[str, Any]
) -> None:
    a, b = paired["folds_a"][0], paired["folds_b"][0]
    doc = pages_client.get("/api/compare", params=[("ids", a), ("ids", b)]).json()
    assert doc["runs"] == [a, b] and doc["diff"]["a"] == a and doc["diff"]["b"] == b
    assert {"path": "config.lr", "a": 0.002, "b": 0.005} in doc["diff"]["changes"]
    assert next(r for r in doc["rows"] if r["field"] == "config.lr")["differs"] is True
    assert doc["charts"]["acc"] == [f"{a} val_acc", f"{b} val_acc"]
    assert len(doc["charts"]["loss"]) == 4 and "statistics" not in doc
    several = pages_client.get("/api/compare", params={"ids": f"{a},{b},{paired['drawn']}"}).json()
    assert several["runs"] == [a, b, paired["drawn"]] and "diff" not in several


def test_two_groups_get_the_paired_statistics(
    pages_client: TestClient, paired: dict[str, Any]
) -> None:
    a, b = paired["a"], paired["b"]
    page = pages_client.get("/compare", params=[("ids", a), ("ids", b), ("metric", "val_loss")])
    assert page.status_code == 200
    with Registry(paired["url"], create=False, grace=None) as registry:
        result = registry.compare_groups(a, b, "val_loss")
    words = re.search(r'<ul class="verdict" id="verdict">(.*?)</ul>', page.text, re.S)
    assert words is not None
    assert re.findall(r"<li>(.*?)</li>", html.unescape(words.group(1))) == verdict(result)
    table = html.unescape(page.text)
    t = result.corrected
    assert f"t = {t.t:.3f}, df {t.df}, p = {t.p:.3g}" in table
    assert f"{t.ci_low:+.4g} to {t.ci_high:+.4g}" in table
    for p in (result.p_a_better, result.p_rope, result.p_b_better):
        assert f"<td>{p:.3f}</td>" in table
    assert "P(A better)" in table and "P(B better)" in table and "5x2cv" not in table
    assert f'data-runs="{",".join(paired["folds_a"] + paired["folds_b"])}"' in page.text
    doc = pages_client.get("/api/compare", params={"ids": f"{a} {b}", "metric": "val_loss"}).json()
    stats = doc["statistics"]
    assert stats["a"] == a and stats["b"] == b and stats["metric"] == "val_loss"
    assert stats["p"] == result.corrected.p and stats["diffs"] == result.diffs
    assert stats["p_b_better"] == result.p_b_better and stats["verdict"] == verdict(result)
    assert stats["runs_a"] == paired["folds_a"] and stats["runs_b"] == paired["folds_b"]
    assert len(doc["charts"]["acc"]) == 4  # one val_acc series per fold of each group


def test_groups_that_do_not_pair_are_refused_in_the_clis_words(
    pages_client: TestClient, paired: dict[str, Any]
) -> None:
    a, three = paired["a"], paired["three"]
    page = pages_client.get("/compare", params=[("ids", a), ("ids", three)])
    assert page.status_code == 200
    refusal = re.search(r'<pre class="error" id="statistics-refusal">(.*?)</pre>', page.text, re.S)
    assert refusal is not None
    text = html.unescape(refusal.group(1))
    assert text.startswith("error: CV groups") and "do not pair fold for fold" in text
    assert '<table class="compare" id="compare">' in page.text  # the rest is still there
    doc = pages_client.get("/api/compare", params=[("ids", a), ("ids", three)]).json()
    assert "do not pair fold for fold" in doc["statistics"]["error"]
    missing = pages_client.get(
        "/api/compare", params=[("ids", a), ("ids", paired["b"]), ("metric", "nosuch")]
    ).json()
    assert "has no metric 'nosuch'" in missing["statistics"]["error"]


def test_bad_parameters_are_400_and_unknown_ids_404(
    pages_client: TestClient, paired: dict[str, Any]
) -> None:
    pair = [("ids", paired["a"]), ("ids", paired["b"])]
    for bad in (
        ("at", "median"),
        ("ratio", "x"),
        ("rope", "wide"),
        ("rope", "-1"),
        ("rope", "nan"),
    ):
        assert pages_client.get("/compare", params=[*pair, bad]).status_code == 400
        api = pages_client.get("/api/compare", params=[*pair, bad])
        assert api.status_code == 400 and bad[0] in api.json()["error"]
    unknown = pages_client.get("/api/compare", params=[("ids", "nosuch"), ("ids", paired["a"])])
    assert unknown.status_code == 404 and "nosuch" in unknown.json()["error"]
    lonely = pages_client.get("/compare", params={"ids": paired["drawn"]})
    assert lonely.status_code == 200 and "at least two run ids" in lonely.text
    assert pages_client.get("/api/compare", params={"ids": paired["drawn"]}).status_code == 400
    assert pages_client.get("/compare").status_code == 200  # the navigation's empty form


def test_the_runs_page_ticks_runs_to_compare(
    pages_client: TestClient, paired: dict[str, Any]
) -> None:
    page = pages_client.get("/").text
    form = re.search(
        r'<form class="pick" id="compare-form" method="get" action="/compare">(.*?)</form>',
        page,
        re.S,
    )
    assert form is not None
    boxes = re.findall(r'<input type="checkbox" name="ids" value="([^"]+)"', form.group(1))
    assert paired["a"] in boxes and paired["drawn"] in boxes
    assert '<button type="submit">Compare</button>' in form.group(1)
    # what the browser sends on submitting two ticked rows
    sent = pages_client.get("/compare", params=[("ids", paired["a"]), ("ids", paired["b"])])
    assert sent.status_code == 200 and 'id="statistics"' in sent.text


def test_hostile_values_are_escaped_on_the_compare_page(
    pages_client: TestClient, paired: dict[str, Any]
) -> None:
    for params in ([("ids", paired["a"]), ("ids", paired["b"])], {"ids": "<script>x</script>"}):
        body = pages_client.get("/compare", params=params).text
        assert "<script>alert" not in body and "<script>x" not in body
        ours = re.findall(r"<script[^>]*>", body)
        assert all(re.fullmatch(r'<script src="/static/[^"]+">', tag) for tag in ours), ours
    page = pages_client.get("/compare", params=[("ids", paired["a"]), ("ids", paired["b"])]).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;&amp;" in page


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
@pytest.mark.parametrize(
    "path", ["/compare", "/api/compare", "/groups/x", "/api/groups/x", "/pictures", "/api/pictures"]
)
def test_the_new_pages_are_read_only(pages_client: TestClient, method: str, path: str) -> None:
    assert pages_client.request(method, path).status_code == 405
