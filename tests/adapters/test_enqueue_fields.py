"""Options that cannot be silently lost: a near miss of a real enqueue field is refused naming
the right one; other unknown fields are ignored as LeanCloud ignores them, but named in the
answer and logged once; an app with ``strict_options`` refuses them all."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cloudqueue import Engine, ValidationError
from cloudqueue.adapters.http_api.app import (
    IGNORED_HEADER,
    QueueApp,
    create_app,
    ignored_header,
)
from cloudqueue.adapters.http_api.wire import ENQUEUE_FIELDS, parse_enqueue
from cloudqueue.engine.core.names import near_miss
from cloudqueue.engine.core.options import Limits, parse_options
from tests.adapters.test_http_api import A, B, master

URL = "/1.1/engine/cloud-queue/tasks"
Client = TestClient[web.Request, web.Application]


@pytest.mark.parametrize(("sent", "meant"), [
    ("unique_id", "uniqueId"), ("uniqueid", "uniqueId"), ("UniqueID", "uniqueId"),
    ("unique-id", "uniqueId"), ("keep_result", "keepResult"), ("keepresult", "keepResult"),
    ("delivery_mode", "deliveryMode"), ("DELIVERYMODE", "deliveryMode"),
    ("atempts", "attempts"), ("attempt", "attempts"), ("retries", None),
    ("backof", "backoff"), ("timout", "timeout"), ("delai", "delay"), ("priorty", "priority"),
    ("dedline", "deadline"), ("param", "params"), ("func", None), ("functon", "function"),
    ("prod", None), ("notify", None), ("retryTimeout", None), ("color", None), ("x", None),
])
def test_near_misses_of_the_enqueue_fields(sent: str, meant: str | None) -> None:
    assert near_miss(sent, ENQUEUE_FIELDS) == meant
    body = {"function": "f", sent: 1}
    if meant is None:
        request = parse_enqueue(body, Limits())
        assert request.ignored == (() if sent in ("prod", "notify", "retryTimeout") else (sent,))
    else:
        with pytest.raises(ValidationError) as refused:
            parse_enqueue(body, Limits())
        assert refused.value.field == sent
        assert f"unknown field {sent!r}: did you mean {meant!r}?" in str(refused.value)


def test_strict_refuses_every_unknown_field_but_the_sdks_own() -> None:
    assert parse_enqueue({"function": "f", "prod": 1, "notify": True}, Limits(),
                         strict=True).ignored == ()
    with pytest.raises(ValidationError, match="unknown field 'color' .*strict_options"):
        parse_enqueue({"function": "f", "color": "red"}, Limits(), strict=True)


def test_a_python_option_near_miss_names_the_python_spelling() -> None:
    with pytest.raises(ValidationError, match="unknown option 'uniqueId'; did you mean "
                                              "'unique_id'\\?"):
        parse_options({"uniqueId": "a"}, wire=False)
    with pytest.raises(ValidationError) as refused:
        parse_options({"colour": "red"}, wire=False)
    assert "did you mean" not in str(refused.value)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    tenants = {A.app_id: QueueApp(A, Engine(data_dir=tmp_path / "a")),
               B.app_id: QueueApp(B, Engine(data_dir=tmp_path / "b"), strict_options=True)}
    async with TestClient(TestServer(create_app(tenants), host="127.0.0.1")) as test_client:
        yield test_client
    for queue_app in tenants.values():
        await queue_app.engine.close()


async def post(client: Client, body: dict[str, Any], keys: Any = A) -> tuple[int, Any, Any]:
    response = await client.post(URL, json=body, headers=master(keys))
    return response.status, await response.json(), response.headers


async def test_over_rest_a_near_miss_is_a_400_and_creates_nothing(client: Client) -> None:
    status, body, _ = await post(client, {"function": "f", "unique_id": "mine-1"})
    assert status == 400
    assert body["code"] == 1 and body["field"] == "unique_id"
    assert "did you mean 'uniqueId'?" in body["error"]
    status, body, _ = await post(client, {"function": "f", "uniqueId": "mine-1"})
    assert (status, body) == (200, {"uniqueId": "mine-1"})  # the id was free: nothing created


async def test_other_unknown_fields_are_named_in_a_header_and_logged_once(
        client: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "cloudqueue.http")
    for _ in range(3):
        status, _, headers = await post(client, {"function": "f", "color": "red", "prod": 1})
        assert status == 200
        assert headers[IGNORED_HEADER] == '"color"'
    status, _, headers = await post(client, {"function": "f"})
    assert status == 200 and IGNORED_HEADER not in headers
    lines = [r.getMessage() for r in caplog.records if "'color'" in r.getMessage()]
    assert lines == ["app appA: enqueue field 'color' is not an option of this queue and is "
                     "ignored (strict_options = true refuses such requests)"]


async def test_the_header_names_any_field_safely(client: Client) -> None:
    """Names are JSON strings in the header (a control character or a comma in a name cannot
    break it), and a body of many unknown fields gets a header of bounded size."""
    body = {"function": "f", "a\x04b": 1, "x,y": 2, "\u00e9t\u00e9": 3}
    status, _, headers = await post(client, body)
    assert status == 200
    assert headers[IGNORED_HEADER] == '"a\\u0004b", "x,y", "\\u00e9t\\u00e9"'
    many = {"function": "f", **{f"field{i:04}": i for i in range(500)}}
    status, _, headers = await post(client, many)
    assert status == 200
    assert len(headers[IGNORED_HEADER]) <= 1_024 + 5 and headers[IGNORED_HEADER].endswith(", ...")
    assert ignored_header(("a", "b"), limit=7) == '"a", ...'


async def test_an_app_with_strict_options_refuses_unknown_fields(client: Client) -> None:
    status, body, _ = await post(client, {"function": "f", "color": "red"}, B)
    assert status == 400 and body["field"] == "color"
    status, body, _ = await post(client, {"function": "f", "prod": 1}, B)
    assert status == 200


async def test_an_app_running_functions_only_in_process_refuses_a_name_it_cannot_run(
        tmp_path: Path) -> None:
    """The Quick start's server has in-process functions and no function host: a misspelt
    function is a 400 naming the ones it runs, not a task that fails after its retries. With a
    function host, or with no functions yet, any name is taken."""
    from cloudqueue.engine.runtime.functions import FunctionRegistry

    async def hello(params: Any, run: Any) -> str:
        return "hi"

    alone = Engine(data_dir=tmp_path / "a")
    alone.define("hello")(hello)
    hosted = Engine(data_dir=tmp_path / "b", invoker=FunctionRegistry())  # another invoker
    hosted.define("hello")(hello)
    tenants = {A.app_id: QueueApp(A, alone), B.app_id: QueueApp(B, hosted)}
    async with TestClient(TestServer(create_app(tenants), host="127.0.0.1")) as client:
        status, body, _ = await post(client, {"function": "helo"})
        assert (status, body["code"], body["field"]) == (400, 1, "function")
        assert body["error"] == ("no function 'helo' in this app: did you mean 'hello'? it runs "
                                 "hello in-process and has no function host (serve "
                                 "--function-host URL)")
        assert (await alone.list_tasks()).total == 0
        assert (await post(client, {"function": "hello"}))[0] == 200
        assert (await post(client, {"function": "helo"}, B))[0] == 200  # the host's to judge
    for engine in (alone, hosted):
        await engine.close()
