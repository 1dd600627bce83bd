"""The dashboard's assets at /dashboard/: served without credentials (they hold no data), each
with its content type, ``Cache-Control: no-cache`` and a Content-Security-Policy that allows no
inline script and nothing from another origin; only the files of the dashboard's folder, never
a path out of it; every file the page references is there."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from cloudqueue import Engine
from cloudqueue.adapters.http_api.app import QueueApp, create_app
from cloudqueue.adapters.http_api.dashboard import ASSETS
from tests.adapters.serving import A

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    engine = Engine(data_dir=tmp_path / "a")
    async with TestClient(TestServer(create_app({A.app_id: QueueApp(A, engine)}),
                                     host="127.0.0.1")) as test_client:
        yield test_client


def check_headers(response: ClientResponse) -> None:
    headers = response.headers
    assert headers["Cache-Control"] == "no-cache"
    assert headers["X-Content-Type-Options"] == "nosniff"
    policy = dict(part.strip().split(" ", 1)
                  for part in headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"  # no 'unsafe-inline', no other origin
    assert "unsafe" not in headers["Content-Security-Policy"]
    assert policy["frame-ancestors"] == "'none'"


async def test_the_page_is_served_without_credentials(client: Client) -> None:
    moved = await client.get("/dashboard", allow_redirects=False)
    assert moved.status == 302 and moved.headers["Location"] == "/dashboard/"
    page = await client.get("/dashboard/")
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    check_headers(page)
    html = await page.text()
    assert html == (ASSETS / "index.html").read_text()
    assert "<script src=\"app.js\"" in html
    same = await client.get("/dashboard/index.html")
    assert same.status == 200 and await same.text() == html


@pytest.mark.parametrize(("name", "content_type"), [
    ("app.js", "text/javascript; charset=utf-8"),
    ("style.css", "text/css; charset=utf-8"),
    ("favicon.svg", "image/svg+xml"),
])
async def test_each_asset_has_its_content_type(client: Client, name: str,
                                               content_type: str) -> None:
    response = await client.get(f"/dashboard/{name}")
    assert response.status == 200
    assert response.headers["Content-Type"] == content_type
    check_headers(response)
    assert await response.read() == (ASSETS / name).read_bytes()


@pytest.mark.parametrize("path", [
    "/dashboard/nope.js",
    "/dashboard/..%2fdashboard.py",
    "/dashboard/..%2F..%2Fapp.py",
    "/dashboard/%2e%2e%2fapp.py",
    "/dashboard/..",
    "/dashboard/.%2e/app.py",
    "/dashboard/../app.py",
    "/dashboard/%2fetc%2fpasswd",
    "/dashboard/..%5capp.py",
    "/dashboard/.hidden.js",
    "/dashboard/sub/app.js",
    "/dashboard/app.js%00.css",
    "/dashboard/app.js/",
])
async def test_nothing_outside_the_folder_is_served(client: Client, path: str) -> None:
    response = await client.get(path, allow_redirects=False)
    assert response.status == 404, (path, response.status)
    assert (await response.json())["code"] == 404


async def test_a_file_of_another_type_is_not_served(client: Client) -> None:
    """Only the asset types the page uses: a stray file (an editor's backup, a Python file
    dropped there) is not served."""
    for name in ("__init__.py", "app.js~", "notes.txt"):
        response = await client.get(f"/dashboard/{name}")
        assert response.status == 404


async def test_every_file_the_page_references_is_served(client: Client) -> None:
    html = (ASSETS / "index.html").read_text()
    referenced = set(re.findall(r'(?:src|href)="([^"#:]+)"', html))
    assert {"app.js", "style.css", "favicon.svg"} <= referenced
    for name in referenced:
        response = await client.get(f"/dashboard/{name}")
        assert response.status == 200, name


def test_no_inline_script_or_style_in_the_page() -> None:
    """The CSP refuses inline scripts, styles and event handler attributes: the page has none,
    so nothing of it is blocked."""
    html = (ASSETS / "index.html").read_text()
    assert re.findall(r"<script[^>]*>([^<]*)</script>", html) == [""]
    assert "<style" not in html
    assert not re.search(r"\son[a-z]+=", html)
    assert not re.search(r"\sstyle=", html)
    script = (ASSETS / "app.js").read_text()
    assert "innerHTML" not in script  # text from the API is never parsed as markup
    # no network beyond this server (the SVG namespace is a name, not a request)
    assert not re.search(r"https?://", script.replace("'http://www.w3.org/2000/svg'", ""))


async def test_the_dashboard_can_be_left_out(tmp_path: Path) -> None:
    engine = Engine(data_dir=tmp_path / "a")
    app = create_app({A.app_id: QueueApp(A, engine)}, dashboard=False)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert (await client.get("/dashboard/")).status == 404


async def test_serve_leaves_it_out_with_dashboard_false_or_no_dashboard(tmp_path: Path) -> None:
    from cloudqueue.cli import _serve_config, build_parser
    from cloudqueue.server import AppConfig, ServeConfig, build_app, load_config

    path = tmp_path / "serve.toml"
    path.write_text('dashboard = false\n[[apps]]\napp_id = "appA"\napp_key = "k"\n'
                    'master_key = "m"\n')
    assert load_config(path).dashboard is False
    with_file = _serve_config(build_parser().parse_args(["serve", "--config", str(path)]))
    flagged = _serve_config(build_parser().parse_args(
        ["serve", "--data-dir", str(tmp_path / "dev"), "--no-dashboard"]))
    assert (with_file.dashboard, flagged.dashboard) == (False, False)
    config = ServeConfig(data_dir=tmp_path / "data", apps=(AppConfig(A),), dashboard=False)
    async with TestClient(TestServer(build_app(config), host="127.0.0.1")) as client:
        assert (await client.get("/dashboard/")).status == 404
        assert (await client.get("/__health/live")).status == 200
