"""The operator token (``admin_token``): ``Authorization: Bearer <token>`` may do on every app
what that app's master key may; a wrong one proves nothing; a server without one admits nobody
this way. The development server keeps one beside the development app's keys."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cloudqueue import ConfigError, Engine
from cloudqueue.adapters.auth import AppKeys, Role, authenticate, is_operator
from cloudqueue.adapters.http_api.app import QueueApp, create_app
from cloudqueue.config import check_admin_token, dev_admin_token, load_config
from tests.adapters.test_http_api import A, B

TOKEN = "operator-token-0123456789abcdef"
URL = "/1.1/engine/cloud-queue/tasks"
Client = TestClient[web.Request, web.Application]
KEYS = {A.app_id: A, B.app_id: B}


def bearer(token: str, app: AppKeys = A) -> dict[str, str]:
    return {"X-LC-Id": app.app_id, "Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("headers", "role"), [
    (bearer(TOKEN), Role.OPERATOR),
    ({**bearer(TOKEN), "Authorization": f"bearer  {TOKEN} "}, Role.OPERATOR),
    (bearer(TOKEN + "x"), Role.NONE),
    (bearer(TOKEN[:-1]), Role.NONE),
    ({**bearer("nope"), "X-LC-Key": f"{A.master_key},master"}, Role.MASTER),
    ({"X-LC-Id": "other-app", "Authorization": f"Bearer {TOKEN}"}, Role.NONE),
    ({"X-LC-Id": A.app_id, "Authorization": f"Basic {TOKEN}"}, Role.NONE),
])
def test_the_token_proves_the_operator_on_the_app_named(headers: dict[str, str],
                                                        role: Role) -> None:
    assert authenticate(headers, KEYS, TOKEN)[1] is role


def test_a_server_without_a_token_admits_no_operator() -> None:
    assert authenticate(bearer(""), KEYS, None)[1] is Role.NONE
    assert not is_operator({"Authorization": "Bearer "}, "")
    assert is_operator({"Authorization": f"Bearer {TOKEN}"}, TOKEN)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    tenants = {A.app_id: QueueApp(A, Engine(data_dir=tmp_path / "a")),
               B.app_id: QueueApp(B, Engine(data_dir=tmp_path / "b"))}
    app = create_app(tenants, operator_token=TOKEN)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client
    for queue_app in tenants.values():
        await queue_app.engine.close()


async def test_the_operator_enqueues_lists_and_cancels_on_every_app(client: Client) -> None:
    for app in (A, B):
        response = await client.post(URL, json={"function": "f", "delay": 60_000,
                                                "uniqueId": f"op-{app.app_id}"},
                                     headers=bearer(TOKEN, app))
        assert (response.status, await response.json()) == (200, {"uniqueId":
                                                                  f"op-{app.app_id}"})
        listed = await (await client.get(URL, headers=bearer(TOKEN, app))).json()
        assert [t["uniqueId"] for t in listed["results"]] == [f"op-{app.app_id}"]
        cancel = await client.post(f"{URL}/op-{app.app_id}/cancel", headers=bearer(TOKEN, app))
        assert (await cancel.json())["state"] == "cancelled"


async def test_a_wrong_token_is_401_and_creates_nothing(client: Client) -> None:
    response = await client.post(URL, json={"function": "f"}, headers=bearer("wrong-token-xyz"))
    assert (response.status, await response.json()) == (401, {"code": 401,
                                                              "error": "Unauthorized."})
    listed = await (await client.get(URL, headers=bearer(TOKEN))).json()
    assert listed["count"] == 0


def test_the_config_takes_a_token_long_enough(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    app = '[[apps]]\napp_id = "a"\napp_key = "k"\nmaster_key = "m"\n'
    path.write_text(f'admin_token = "{TOKEN}"\n' + app)
    assert load_config(path).admin_token == TOKEN
    path.write_text('admin_token = "short"\n' + app)
    with pytest.raises(ConfigError, match="admin_token must be at least 16 printable ASCII"):
        load_config(path)
    path.write_text('admin_tokn = "x"\n' + app)
    with pytest.raises(ConfigError, match="did you mean 'admin_token'"):
        load_config(path)
    with pytest.raises(ConfigError, match="CLOUDQUEUE_ADMIN_TOKEN must be"):
        check_admin_token("has a space in it, long", "CLOUDQUEUE_ADMIN_TOKEN")


def test_the_development_server_keeps_its_token_with_the_keys(tmp_path: Path) -> None:
    token = dev_admin_token(tmp_path)
    stored = json.loads((tmp_path / "dev-credentials.json").read_text())
    assert stored["admin_token"] == token and len(token) == 32
    assert dev_admin_token(tmp_path) == token  # kept
    del stored["admin_token"]  # a file from before there was one
    (tmp_path / "dev-credentials.json").write_text(json.dumps(stored))
    added = dev_admin_token(tmp_path)
    assert added != token and json.loads(
        (tmp_path / "dev-credentials.json").read_text())["admin_token"] == added
    assert (tmp_path / "dev-credentials.json").stat().st_mode & 0o777 == 0o600
