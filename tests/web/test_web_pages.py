"""The pages and JSON endpoints of ``arch ui`` over a registry of real training runs: the runs
listing (filter, sort, pages, CV groups folded), a run's page and its series, hostile text
escaped."""

from __future__ import annotations

import re
from typing import Any

from starlette.testclient import TestClient
from web_testing import HOSTILE

from archlab.registry import Registry
from archlab.web.pages.runs import metric_field


def ids_in(html: str) -> list[str]:
    """The run and group ids of the listing's rows, in order."""
    return re.findall(r'<tr class="(?:run|group)" data-id="([^"]+)"', html)


def test_the_runs_page_lists_runs_and_folds_cv_groups(
    client: TestClient, filled: dict[str, Any]
) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    rows = ids_in(page.text)
    assert rows[0] == filled["hostile"] and filled["group"] in rows  # newest first
    assert not set(filled["folds"]) & set(rows)  # the folds are one group row
    assert "2 of 2 folds" in page.text and " ± " in page.text
    assert all(f'href="/runs/{f}"' in page.text for f in filled["folds"])
    assert "team=vision" in page.text and 'class="status completed"' in page.text
    flat = client.get("/?group=0")
    assert set(filled["folds"]) <= set(ids_in(flat.text))
    assert filled["group"] not in ids_in(flat.text)
    assert '<a href="/">Runs</a>' in page.text or 'href="/" aria-current' in page.text


def test_a_valid_filter_narrows_the_listing(client: TestClient, filled: dict[str, Any]) -> None:
    page = client.get("/", params={"where": "mixup.alpha > 0.1", "group": "0"})
    assert page.status_code == 200 and ids_in(page.text) == [filled["mixed"]]
    assert "1 run match" in page.text
    assert 'value="mixup.alpha &gt; 0.1"' in page.text  # the box keeps the query, escaped


def test_a_bad_filter_shows_the_clis_message_with_its_caret(
    client: TestClient, filled: dict[str, Any]
) -> None:
    from archlab.registry.query import QueryError

    where = "metrics.val_acc > and status == 'completed'"
    page = client.get("/", params={"where": where})
    assert page.status_code == 400
    with Registry(filled["url"], create=False, grace=None) as registry:
        try:
            registry.runs(where=where)
        except QueryError as exc:
            expected = f"error: {exc}"
    shown = re.search(r'<pre class="error" id="query-error">(.*?)</pre>', page.text, re.S)
    assert shown is not None
    text = shown.group(1).replace("&gt;", ">").replace("&#39;", "'").replace("&lt;", "<")
    assert text == expected and "column 19" in text and text.endswith("^")
    assert '<form class="filter"' in page.text  # the page is still there to fix the query
    api = client.get("/api/runs", params={"where": where})
    assert api.status_code == 400 and api.json()["error"] == expected.removeprefix("error: ")


def test_columns_sort_both_ways(client: TestClient, filled: dict[str, Any]) -> None:
    with Registry(filled["url"], create=False, grace=None) as registry:
        by_acc = [r.id for r in registry.runs(order_by="-metrics.val_loss")]
    page = client.get("/", params={"sort": "-metrics.val_loss", "group": "0"})
    assert ids_in(page.text) == by_acc
    assert "?sort=metrics.val_loss" in page.text  # the header now sorts the other way
    up = client.get("/", params={"sort": "metrics.val_loss", "group": "0"})
    assert ids_in(up.text)[0] == by_acc[-1]
    bad = client.get("/", params={"sort": "metrics."})
    assert bad.status_code == 400 and "error:" in bad.text


def test_pages_follow_the_registry_order_without_gaps(
    client: TestClient, filled: dict[str, Any]
) -> None:
    with Registry(filled["url"], create=False, grace=None) as registry:
        every = [r.id for r in registry.runs()]
    seen = []
    for offset in range(0, len(every) + 2, 2):
        page = client.get("/", params={"group": "0", "limit": 2, "offset": offset})
        seen += ids_in(page.text)
    assert seen == every
    first = client.get("/", params={"group": "0", "limit": 2})
    assert 'rel="next"' in first.text and 'rel="prev"' not in first.text
    assert f"{len(every)} runs; 1–2 shown" in first.text
    api = client.get("/api/runs", params={"group": "0", "limit": 2, "offset": 2}).json()
    assert api["total"] == len(every) and [e["id"] for e in api["entries"]] == every[2:4]
    for bad in ({"offset": "x"}, {"offset": "-1"}, {"limit": "0"}, {"limit": "100000"}):
        assert client.get("/api/runs", params=bad).status_code == 400


def test_the_runs_endpoint_gives_groups_as_arch_runs_list_group_json(
    client: TestClient, filled: dict[str, Any]
) -> None:
    entries = client.get("/api/runs").json()["entries"]
    [group] = [e for e in entries if e["type"] == "cv_group"]
    assert group["id"] == filled["group"] and sorted(group["runs"]) == sorted(filled["folds"])
    assert set(group["aggregates"]["val_acc"]) >= {"mean", "std", "n"}


def test_a_run_page_shows_everything_about_the_run(
    client: TestClient, filled: dict[str, Any]
) -> None:
    run_id = filled["plain"]
    page = client.get(f"/runs/{run_id}")
    assert page.status_code == 200
    for part in ("<h2>config</h2>", "<h2>provenance</h2>", "<h2>mixup</h2>", "<h2>artifacts</h2>"):
        assert part in page.text
    assert 'id="metrics"' in page.text and "val_acc" in page.text
    assert f'data-runs="{run_id}"' in page.text and 'data-live="0"' in page.text
    assert '<pre class="spec" id="spec">' in page.text and "&#34;nodes&#34;" in page.text
    assert '<script src="/static/curves.js"></script>' in page.text
    assert re.search(rf'href="/runs/{run_id}/artifacts/{run_id}/[^"]+"', page.text)
    mixed = client.get(f"/runs/{filled['mixed']}").text
    assert "<th>alpha</th><td>0.2</td>" in mixed


def test_a_run_page_shows_the_specs_graph_with_its_shapes(
    client: TestClient, filled: dict[str, Any]
) -> None:
    page = client.get(f"/runs/{filled['plain']}").text
    rows = re.findall(
        r'<tr data-node="([^"]+)"><td>[^<]+</td><td>([^<]+)</td><td>([^<]*)</td>'
        r"<td><code>([^<]+)</code></td></tr>",
        page,
    )
    assert [r[0] for r in rows] == ["patches", "cls", "pos", "encoder", "norm", "head"]
    assert rows[3][1:] == ("encoder x4", "pos", "(B, 17, 64)")
    assert rows[-1][3] == "(B, 10)"


def test_a_fold_page_shows_its_cv_group(client: TestClient, filled: dict[str, Any]) -> None:
    page = client.get(f"/runs/{filled['folds'][1]}")
    assert f"CV group {filled['group']}" in page.text and "mean ± std" in page.text
    assert all(f'href="/runs/{f}"' in page.text for f in filled["folds"])


def test_unknown_runs_are_404_as_a_page_and_as_json(client: TestClient) -> None:
    page = client.get("/runs/nosuchrun")
    assert page.status_code == 404 and "no run or CV group" in page.text
    api = client.get("/api/runs/nosuchrun")
    assert api.status_code == 404 and "nosuchrun" in api.json()["error"]
    assert client.get("/api/runs/nosuchrun/metrics").status_code == 404


def test_the_run_endpoints_give_the_run_and_every_series(
    client: TestClient, filled: dict[str, Any]
) -> None:
    run_id = filled["plain"]
    doc = client.get(f"/api/runs/{run_id}").json()
    assert doc["id"] == run_id and doc["status"] == "completed" and "val_acc" in doc["metrics"]
    series = client.get(f"/api/runs/{run_id}/metrics").json()
    assert series["run"] == run_id and series["status"] == "completed"
    val = series["metrics"]["val_acc"]
    assert val["step"] == [1, 2] and val["epoch"] == [1.0, 2.0] and len(val["value"]) == 2
    assert {"train_loss", "val_loss", "lr"} <= set(series["metrics"])
    fold = client.get(f"/api/runs/{filled['folds'][0]}").json()
    assert fold["cv_group"]["id"] == filled["group"]


def test_hostile_names_tags_and_configs_are_shown_escaped(
    client: TestClient, filled: dict[str, Any]
) -> None:
    for path in ("/", "/?group=0", f"/runs/{filled['hostile']}", "/runs/%3Cscript%3E"):
        body = client.get(path).text
        assert "alert(1)" in body or path.endswith("%3E")
        ours = re.findall(r"<script[^>]*>", body)
        assert all(re.fullmatch(r'<script src="/static/[^"]+">', tag) for tag in ours), ours
        assert "<script>alert" not in body and "\"'&amp;" not in body.replace("&#34;&#39;", "")
    page = client.get(f"/runs/{filled['hostile']}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;&amp;" in page
    bad = client.get("/", params={"where": f"tags.note == {HOSTILE}"})
    assert bad.status_code == 400 and "<script>alert" not in bad.text


def test_metric_fields_quote_names_that_are_not_words() -> None:
    assert metric_field("val_acc") == "metrics.val_acc"
    assert metric_field("acc@1") == "metrics.'acc@1'"
    assert metric_field("it's") == "metrics.'it\\'s'"


def test_the_charting_library_and_our_files_are_served_from_the_package(
    client: TestClient,
) -> None:
    for path, kind in (
        ("/static/vendor/uplot/uPlot.iife.min.js", "javascript"),
        ("/static/vendor/uplot/uPlot.min.css", "text/css"),
        ("/static/curves.js", "javascript"),
        ("/static/style.css", "text/css"),
    ):
        response = client.get(path)
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/static/%2e%2e/app.py").status_code == 404
