"""The CV group page of ``arch ui`` and ``/api/groups/ID`` over real 2-fold CV groups: the
aggregates as ``arch runs show GROUP`` gives them, the folds, their split fingerprints, one
chart per metric family with one series per fold and metric, hostile names escaped."""

from __future__ import annotations

import re
from typing import Any

from starlette.testclient import TestClient
from web_testing import HOSTILE

from archlab.registry import Registry, views
from archlab.web.charts import charts, family
from archlab.web.format import mean_std


def test_the_group_page_shows_aggregates_folds_and_fingerprints(
    pages_client: TestClient, paired: dict[str, Any]
) -> None:
    group_id = paired["a"]
    page = pages_client.get(f"/groups/{group_id}")
    assert page.status_code == 200 and f"CV group {group_id}" in page.text
    with Registry(paired["url"], create=False, grace=None) as registry:
        shown = views.show(registry, group_id)
        prints = [registry.split_fingerprints(f) for f in paired["folds_a"]]
    assert shown.group is not None
    for name, agg in shown.group.aggregates.items():
        row = re.search(
            rf'<tr data-metric="{name}"><td>{name}</td><td class="num">([^<]*)<', page.text
        )
        assert row is not None and row.group(1) == mean_std(agg.mean, agg.std, agg.n)
    for fold in paired["folds_a"]:
        assert f'<tr data-id="{fold}">' in page.text and f'href="/runs/{fold}"' in page.text
    for p in prints:
        assert p["train_sha256"] and p["train_sha256"] in page.text and p["val_sha256"] in page.text
    curves = re.search(
        r'<div class="curves" id="curves" data-runs="([^"]*)" data-labels="([^"]*)"', page.text
    )
    assert curves is not None
    assert curves.group(1).split(",") == paired["folds_a"]
    assert curves.group(2) == "fold 0,fold 1"
    assert "<h2>config</h2>" in page.text and "data_sha256" in page.text
    assert "<h2>mixup</h2>" in page.text and "fold 0, fold 1: none" in page.text
    assert '<script src="/static/curves.js"></script>' in page.text


def test_the_group_endpoint_counts_one_series_per_fold_and_metric(
    pages_client: TestClient, paired: dict[str, Any]
) -> None:
    doc = pages_client.get(f"/api/groups/{paired['a']}").json()
    assert doc["type"] == "cv_group" and doc["id"] == paired["a"]
    assert doc["runs"] == paired["folds_a"] and [f["id"] for f in doc["folds"]] == paired["folds_a"]
    assert {"mean", "std", "n", "min", "max"} <= set(doc["aggregates"]["val_acc"])
    assert [p["id"] for p in doc["fingerprints"]] == paired["folds_a"]
    assert all(len(p["train_sha256"]) == 64 for p in doc["fingerprints"])
    series = {}
    for fold in paired["folds_a"]:
        series[fold] = pages_client.get(f"/api/runs/{fold}/metrics").json()["metrics"]
    families = {family(n) for s in series.values() for n in s}
    assert set(doc["charts"]) == families and "loss" in families
    for name, labels in doc["charts"].items():
        expected = sum(1 for s in series.values() for n in s if family(n) == name)
        assert len(labels) == expected
    assert doc["charts"]["acc"] == ["fold 0 val_acc", "fold 1 val_acc"]
    assert len(doc["charts"]["loss"]) == 4  # train_loss and val_loss of each fold


def test_the_runs_page_links_a_group_row_to_its_page(
    pages_client: TestClient, paired: dict[str, Any]
) -> None:
    page = pages_client.get("/").text
    for group in (paired["a"], paired["b"], paired["three"]):
        assert f'<tr class="group" data-id="{group}">' in page
        assert f'<a href="/groups/{group}">{group}</a>' in page
    fold = pages_client.get(f"/runs/{paired['folds_a'][0]}").text
    assert f'<a href="/groups/{paired["a"]}">' in fold
    moved = pages_client.get(f"/runs/{paired['a']}", follow_redirects=False)
    assert moved.status_code == 302 and moved.headers["location"] == f"/groups/{paired['a']}"


def test_unknown_ids_and_runs_are_not_groups(
    pages_client: TestClient, paired: dict[str, Any]
) -> None:
    assert pages_client.get("/groups/nosuch").status_code == 404
    api = pages_client.get("/api/groups/nosuch")
    assert api.status_code == 404 and "nosuch" in api.json()["error"]
    run = pages_client.get(f"/api/groups/{paired['folds_a'][0]}")
    assert run.status_code == 404 and "is a run, not a CV group" in run.json()["error"]
    hostile = pages_client.get("/groups/%3Cscript%3Ex")
    assert hostile.status_code == 404 and "<script>x" not in hostile.text


def test_a_group_with_hostile_names_is_shown_escaped(
    pages_client: TestClient, paired: dict[str, Any]
) -> None:
    page = pages_client.get(f"/groups/{paired['b']}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;&amp;" in page
    assert HOSTILE not in page and "<script>alert" not in page
    ours = re.findall(r"<script[^>]*>", page)
    assert all(re.fullmatch(r'<script src="/static/[^"]+">', tag) for tag in ours), ours


def test_charts_label_series_as_the_script_does() -> None:
    assert family("val_loss") == family("train_loss") == "loss" and family("lr") == "lr"
    assert charts([("a", ["val_acc", "train_loss"])]) == {
        "acc": ["val_acc"],
        "loss": ["train_loss"],
    }
    two = charts([("a", ["val_loss"]), ("b", ["val_loss", "train_loss"])])
    assert two == {"loss": ["a val_loss", "b train_loss", "b val_loss"]}
