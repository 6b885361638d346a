"""``arch ui`` is read-only and careful: 405 for every write method, artifacts only as the run
recorded them, a token where one is set, loopback Host headers only on loopback, strict
response headers, no bind beyond loopback without a token, and the registry never written."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient
from web_testing import LOOPBACK

from archlab.cli.main import cli
from archlab.registry import Registry
from archlab.web.app import create_app
from archlab.web.security import COOKIE
from archlab.web.serve import UIError, address, check_bind

TOKEN = "s3cret-token-0123456789"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("path", ["/", "/api/runs", "/runs/x", "/static/style.css", "/nowhere"])
def test_every_write_method_answers_405(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"


def test_head_is_answered(client: TestClient) -> None:
    assert client.head("/").status_code == 200


def test_a_recorded_artifact_is_served(client: TestClient, filled: dict[str, Any]) -> None:
    with Registry(filled["url"], create=False, grace=None) as registry:
        run = registry.get(filled["plain"])
    [first, *_] = run.artifacts
    response = client.get(f"/runs/{run.id}/artifacts/{first.path}")
    assert response.status_code == 200 and len(response.content) == first.size
    assert response.headers["content-disposition"].startswith("attachment")


@pytest.mark.parametrize(
    "tail",
    [
        "../registry.db",
        "%2e%2e/registry.db",
        "%2E%2E%2Fregistry.db",
        "..%2f..%2fregistry.db",
        "/etc/passwd",
        "%2Fetc%2Fpasswd",
        "{run}/../../registry.db",
        "{run}/%2e%2e/%2e%2e/registry.db",
        "{run}/not-recorded.bin",
        "{run}",
        "",
    ],
)
def test_artifact_paths_that_are_not_recorded_files_are_404(
    client: TestClient, filled: dict[str, Any], tail: str
) -> None:
    run_id = filled["plain"]
    response = client.get(f"/runs/{run_id}/artifacts/" + tail.format(run=run_id))
    assert response.status_code == 404
    assert b"SQLite" not in response.content and b"root:" not in response.content


def test_an_artifact_replaced_by_a_link_out_is_404(tmp_path: Any, filled: dict[str, Any]) -> None:
    """A recorded artifact whose file is swapped for a symbolic link leading out of the run's
    folder is refused, though its recorded path is exact."""
    with Registry(filled["url"], create=False, grace=None) as registry:
        run = registry.get(filled["mixed"])
    [first, *_] = run.artifacts
    target = filled["artifacts"] / first.path
    secret = tmp_path / "secret.bin"
    secret.write_bytes(target.read_bytes())  # same bytes: only the place gives it away
    saved = target.with_suffix(".saved")
    target.rename(saved)
    try:
        target.symlink_to(secret)
        with TestClient(create_app(filled["url"]), base_url=LOOPBACK) as client:
            assert client.get(f"/runs/{run.id}/artifacts/{first.path}").status_code == 404
    finally:
        target.unlink()
        saved.rename(target)


def test_responses_carry_strict_headers(client: TestClient, filled: dict[str, Any]) -> None:
    for path in ("/", f"/runs/{filled['plain']}", "/api/runs", "/runs/none", "/static/curves.js"):
        headers = client.get(path).headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        csp = headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert client.post("/").headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost", "localhost:1", "[::1]:8765"])
def test_loopback_host_headers_are_answered(client: TestClient, host: str) -> None:
    assert client.get("/", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "127.0.0.1.evil.example"])
def test_other_host_headers_are_refused_on_loopback(client: TestClient, host: str) -> None:
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1."""
    assert client.get("/api/runs", headers={"host": host}).status_code == 400


def test_a_token_is_required_when_set(filled: dict[str, Any]) -> None:
    app = create_app(filled["url"], token=TOKEN, host="0.0.0.0")
    with TestClient(app, base_url="http://192.0.2.1:8765") as client:
        assert client.get("/").status_code == 401
        assert client.get("/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/static/style.css").status_code == 401
        assert client.get("/?token=wrong").status_code == 401
        bearer = client.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200
        assert client.get("/", headers={"host": "evil.example"}).status_code == 401
        first = client.get(f"/?token={TOKEN}")  # the URL arch ui prints
        assert first.status_code == 200
        cookie = first.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert client.get(f"/runs/{filled['plain']}").status_code == 200  # by the cookie
        client.cookies.clear()
        assert client.get("/").status_code == 401


def test_binding_beyond_loopback_needs_a_token() -> None:
    check_bind("127.0.0.1", None)
    check_bind("localhost", None)
    check_bind("::1", None)
    with pytest.raises(UIError, match="--token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(UIError, match="--token"):
        check_bind("192.168.1.5", None)
    check_bind("0.0.0.0", TOKEN)
    with pytest.raises(UIError, match="16 characters"):
        check_bind("0.0.0.0", "short")
    assert address("127.0.0.1", 8765, None) == "http://127.0.0.1:8765/"
    assert address("::1", 80, TOKEN) == f"http://[::1]:80/?token={TOKEN}"


def test_arch_ui_refuses_a_public_bind_without_a_token(filled: dict[str, Any]) -> None:
    result = CliRunner().invoke(cli, ["ui", "--registry", filled["url"], "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "--token" in result.output
    assert "Traceback" not in result.output


def test_arch_ui_refuses_a_missing_registry(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'none.db'}"
    result = CliRunner().invoke(cli, ["ui", "--registry", url])
    assert result.exit_code == 2 and "no registry" in result.output
    assert not (tmp_path / "none.db").exists() or os.path.getsize(tmp_path / "none.db") == 0


def test_a_missing_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name)
    )
    result = CliRunner().invoke(cli, ["ui"])
    assert result.exit_code == 2 and "pip install 'archlab[ui]'" in result.output


def test_browsing_never_writes_the_registry(filled: dict[str, Any]) -> None:
    db = filled["db"]
    with Registry(filled["url"], create=False, grace=None) as registry:
        run = registry.get(filled["plain"])
    before = (db.stat().st_mtime_ns, db.stat().st_size, db.read_bytes())
    time.sleep(0.01)
    with TestClient(create_app(filled["url"]), base_url=LOOPBACK) as client:
        for path in (
            "/",
            "/?group=0&sort=-metrics.val_acc",
            "/?where=bad ==",
            f"/runs/{run.id}",
            f"/runs/{filled['folds'][0]}",
            f"/api/runs/{run.id}/metrics",
            f"/runs/{run.id}/artifacts/{run.artifacts[0].path}",
        ):
            client.get(path)
        client.post("/")
    assert (db.stat().st_mtime_ns, db.stat().st_size, db.read_bytes()) == before
