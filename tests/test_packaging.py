"""What `pip install .` installs: one import package, `cloudqueue`, typed, that runs without a
checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    # built from a copy of the sources, so the checkout gets no build/ folder
    shutil.copytree(ROOT, build / "src", symlinks=True, ignore=shutil.ignore_patterns(
        ".*", "build", "dist", "*.egg-info", "__pycache__", "data", "artifacts", "node_modules",
        "results"))
    # as `pip install .` builds it: setuptools from the package index, in an isolated env
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(build / "src")], check=True, timeout=180, capture_output=True)
    (found,) = out.glob("cloudqueue-*.whl")
    return found


def test_the_wheel_holds_one_typed_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"cloudqueue"}
    assert "cloudqueue/py.typed" in names
    assert "cloudqueue/engine/core/engine.py" in names
    assert "cloudqueue/adapters/http_api/openapi.json" in names
    dashboard = "cloudqueue/adapters/http_api/dashboard"
    assert {f"{dashboard}/{name}" for name in ("index.html", "app.js", "style.css",
                                                "favicon.svg")} <= set(names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "cloudqueue = cloudqueue.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_installed_package_imports_and_runs_the_demo_outside_a_checkout(
        wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site), "CLOUDQUEUE_DATA": str(tmp_path / "data")}
    check = ("import cloudqueue, sys; from cloudqueue import Engine, QueueClient, Continue; "
             "print(cloudqueue.__file__); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('engine', 'adapters')))")
    result = subprocess.run([sys.executable, "-c", check], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    where, bare = result.stdout.splitlines()
    assert Path(where).is_relative_to(site)
    assert bare == "[]"
    demo = subprocess.run([sys.executable, "-m", "cloudqueue", "demo"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert demo.returncode == 0, demo.stderr
    assert demo.stdout.count("'status': 'success'") == 3


DASHBOARD_CHECK = """
import asyncio, pathlib
from aiohttp.test_utils import TestClient, TestServer
from cloudqueue.adapters.http_api.app import create_app
from cloudqueue.adapters.http_api.dashboard import ASSETS

async def main():
    print(ASSETS)
    async with TestClient(TestServer(create_app({}), host="127.0.0.1")) as client:
        for name in ("", "app.js", "style.css", "favicon.svg"):
            response = await client.get("/dashboard/" + name)
            body = await response.read()
            print(response.status, body == (ASSETS / (name or "index.html")).read_bytes())

asyncio.run(main())
"""


def test_the_installed_package_serves_the_dashboard(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", DASHBOARD_CHECK], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    where, *answers = result.stdout.splitlines()
    assert Path(where).is_relative_to(site)  # the installed copy, not the checkout's
    assert answers == ["200 True"] * 4
