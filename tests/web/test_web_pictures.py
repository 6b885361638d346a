"""The pictures of ``arch ui``: the gallery of every image artifact runs recorded (the map a
real ``arch embed`` recorded, a PNG and an SVG holding a script recorded through the registry's
artifact API), grouped by run with captions, filtered by kind and ``where``; each served only
by the artifact route, an SVG under a sandboxing policy."""

from __future__ import annotations

import re
from typing import Any

from starlette.testclient import TestClient
from web_testing import HOSTILE

from archlab.registry import Registry


def sections(page: str) -> list[str]:
    return re.findall(r'<section class="run-pictures" data-id="([^"]+)">', page)


def test_the_gallery_shows_every_recorded_picture_by_run(
    pages_client: TestClient, paired: dict[str, Any]
) -> None:
    page = pages_client.get("/pictures")
    assert page.status_code == 200
    assert sections(page.text) == [paired["embedded"], paired["drawn"]]  # newest first
    kinds = re.findall(r'<figure data-kind="([^"]+)">', page.text)
    assert kinds == ["embedding-map", "kept-patches", "relevance-map"]
    for run in (paired["embedded"], paired["drawn"]):
        assert re.search(rf'<img src="/runs/{run}/artifacts/{run}/[^"]+"', page.text)
    assert "<strong>embedding-map</strong> · map.png" in page.text
    assert "run " + paired["embedded"] + " · vit-tiny-digits" in page.text
    assert "2 runs with pictures among runs 1–" in page.text


def test_pictures_filter_by_kind_and_where(
    pages_client: TestClient, paired: dict[str, Any]
) -> None:
    maps = pages_client.get("/pictures", params={"kind": "embedding-map"}).text
    assert sections(maps) == [paired["embedded"]]
    assert '<option value="embedding-map" selected>' in maps
    where = pages_client.get("/pictures", params={"where": "tags.evaluation == 'embed'"}).text
    assert sections(where) == [paired["embedded"]]
    none = pages_client.get("/pictures", params={"where": "kind == 'train'"}).text
    assert sections(none) == [] and 'id="no-pictures"' in none
    bad = pages_client.get("/pictures", params={"where": "metrics.val_acc >"})
    assert bad.status_code == 400 and "column" in bad.text and 'id="query-error"' in bad.text
    api = pages_client.get("/api/pictures", params={"where": "metrics.val_acc >"})
    assert api.status_code == 400 and "column" in api.json()["error"]
    assert pages_client.get("/api/pictures", params={"limit": "0"}).status_code == 400
    paged = pages_client.get("/api/pictures", params={"limit": 1}).json()
    assert [r["id"] for r in paged["runs"]] == [paired["embedded"]] and paged["limit"] == 1
    later = pages_client.get("/pictures", params={"limit": 1, "offset": 1}).text
    assert 'rel="prev"' in later and 'rel="next"' in later


def test_the_pictures_endpoint_gives_urls_the_artifact_route_serves(
    pages_client: TestClient, paired: dict[str, Any]
) -> None:
    doc = pages_client.get("/api/pictures").json()
    assert [r["id"] for r in doc["runs"]] == [paired["embedded"], paired["drawn"]]
    with Registry(paired["url"], create=False, grace=None) as registry:
        recorded = {a.path: a for r in doc["runs"] for a in registry.get(r["id"]).artifacts}
    media = set()
    for run in doc["runs"]:
        for picture in run["pictures"]:
            served = pages_client.get(picture["url"])
            assert served.status_code == 200 and len(served.content) == picture["size"]
            assert served.headers["content-type"].startswith(picture["media_type"])
            assert recorded[picture["path"]].sha256 == picture["sha256"]
            media.add(picture["media_type"])
    assert media == {"image/png", "image/svg+xml"}


def test_an_svg_is_served_so_it_cannot_run_script(
    pages_client: TestClient, paired: dict[str, Any]
) -> None:
    [svg] = [
        p
        for p in pages_client.get(f"/api/runs/{paired['drawn']}/pictures").json()["pictures"]
        if p["media_type"] == "image/svg+xml"
    ]
    served = pages_client.get(svg["url"])
    assert served.status_code == 200 and b"<script>" in served.content  # the file as recorded
    policy = served.headers["content-security-policy"]
    assert policy.split(";")[0] == "sandbox" and "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "script-src" not in policy and served.headers["x-content-type-options"] == "nosniff"
    png = pages_client.get(f"/runs/{paired['embedded']}/artifacts/{paired['embedded']}/map.png")
    assert png.headers["content-type"] == "image/png"
    assert png.headers["content-disposition"].startswith("inline")
    assert "sandbox" not in png.headers["content-security-policy"]  # the site's own policy


def test_a_runs_pictures_page_and_endpoint(
    pages_client: TestClient, paired: dict[str, Any]
) -> None:
    run = paired["drawn"]
    page = pages_client.get(f"/runs/{run}/pictures")
    assert page.status_code == 200 and sections(page.text) == [run]
    assert f'<a href="/runs/{run}/pictures">' in pages_client.get(f"/runs/{run}").text
    doc = pages_client.get(f"/api/runs/{run}/pictures").json()
    assert doc["id"] == run and {p["kind"] for p in doc["pictures"]} == {
        "kept-patches",
        "relevance-map",
    }
    kept = pages_client.get(f"/api/runs/{run}/pictures", params={"kind": "kept-patches"}).json()
    assert [p["name"] for p in kept["pictures"]] == ["patches.png"]
    fold = paired["folds_a"][0]
    assert pages_client.get(f"/api/runs/{fold}/pictures").json() == {"id": fold, "pictures": []}
    assert 'id="no-pictures"' in pages_client.get(f"/runs/{fold}/pictures").text
    assert pages_client.get("/runs/nosuch/pictures").status_code == 404
    assert pages_client.get("/api/runs/nosuch/pictures").status_code == 404


def test_hostile_picture_names_are_escaped_and_encoded(
    pages_client: TestClient, paired: dict[str, Any]
) -> None:
    page = pages_client.get("/pictures").text
    assert f"/artifacts/{paired['drawn']}/%3Cscript%3Emap.svg" in page
    assert "&lt;script&gt;map.svg" in page and "<script>map" not in page
    assert HOSTILE not in page
    ours = re.findall(r"<script[^>]*>", page)
    assert all(re.fullmatch(r'<script src="/static/[^"]+">', tag) for tag in ours), ours
    kind = pages_client.get("/pictures", params={"kind": HOSTILE}).text
    assert "<script>alert" not in kind and "&lt;script&gt;alert(1)" in kind


def test_the_navigation_links_every_page(pages_client: TestClient) -> None:
    page = pages_client.get("/pictures").text
    assert '<a href="/compare">Compare</a>' in page
    assert '<a href="/pictures" aria-current="page">Pictures</a>' in page
    assert 'class="off"' not in page
