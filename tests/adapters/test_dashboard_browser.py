"""The dashboard in a real headless Chromium against a real server on 127.0.0.1: an operator
signs in, sees the overview, watches a task appear in the list and its progress bar move, retries
a failed task, pauses and resumes the app; a viewer sees the same pages without an action button.
The functions run in-process and wait on gates the test opens, so every step is the test's own
doing, never a matter of timing. Screenshots are kept as artifacts."""

from __future__ import annotations

import asyncio
import json
import os
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

import cloudqueue
from cloudqueue import Engine, Run
from cloudqueue.adapters.auth import AppKeys
from cloudqueue.adapters.http_api.app import QueueApp, create_app
from tests.adapters.serving import A
from tests.browser import Browser, Page, find_chromium

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("CLOUDQUEUE_ARTIFACTS", ROOT / "artifacts"))
README_PICTURE = ROOT / "docs" / "images" / "dashboard.png"
OPERATOR = "operator-token-0123456789abcdef"
VIEWER = "viewer-token-0123456789abcdef"
TASKS = "/1.1/engine/cloud-queue/tasks"
MASTER = {"X-LC-Id": A.app_id, "X-LC-Key": f"{A.master_key},master"}
B = AppKeys("appB", "appB-key-0123456789", "appB-master-0123456789")


@pytest.fixture
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        # scripts/test.sh says why it could not install chromium
        why = (os.environ.get("CLOUDQUEUE_BROWSER_MISSING")
               or "no chromium on this machine (apt-get install chromium; scripts/test.sh "
                  "installs it when it can)")
        if os.environ.get("CLOUDQUEUE_REQUIRE_BROWSER"):
            pytest.fail(f"CLOUDQUEUE_REQUIRE_BROWSER is set but no chromium was found: {why}")
        pytest.skip(f"browser test: {why}")
    return binary


@dataclass
class Gates:
    """One gate per task and step: a function waits at ``gates[uniqueId, step]`` until the
    test opens it."""

    events: defaultdict[tuple[str, int], asyncio.Event] = field(
        default_factory=lambda: defaultdict(asyncio.Event))
    failed_once: set[str] = field(default_factory=set)

    def open(self, unique_id: str, step: int) -> None:
        self.events[unique_id, step].set()


def functions(engine: Engine, gates: Gates) -> None:
    @cloudqueue.define("report")
    async def report(params: Any, run: Run) -> Any:
        assert run.unique_id is not None
        await run.progress(30, message="copied the first third")
        await gates.events[run.unique_id, 1].wait()
        await run.progress(70, message="copied most of it")
        await gates.events[run.unique_id, 2].wait()
        return {"copied": 3}

    @cloudqueue.define("flaky")
    async def flaky(params: Any, run: Run) -> Any:
        assert run.unique_id is not None
        if run.unique_id not in gates.failed_once:  # the first run of each task fails
            gates.failed_once.add(run.unique_id)
            raise RuntimeError("the mail server said no")
        return {"sent": True}

    @cloudqueue.define("quick")
    async def quick(params: Any, run: Run) -> Any:
        return {"ok": True}

    engine.register(report, flaky, quick)


@dataclass
class Server:
    url: str
    session: aiohttp.ClientSession
    engine: Engine  # app A's

    async def enqueue(self, function: str, **options: Any) -> str:
        async with self.session.post(f"{self.url}{TASKS}", json={"function": function,
                                                                 **options},
                                     headers=MASTER) as response:
            assert response.status == 200, await response.text()
            unique_id: str = (await response.json())["uniqueId"]
            return unique_id

    async def info(self, unique_id: str) -> dict[str, Any]:
        async with self.session.get(f"{self.url}{TASKS}/{unique_id}",
                                    headers=MASTER) as response:
            assert response.status == 200, await response.text()
            info: dict[str, Any] = await response.json()
            return info


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Server, Gates]]:
    gates = Gates()
    engine = Engine(data_dir=tmp_path / "a", concurrency=4)
    functions(engine, gates)
    other = Engine(data_dir=tmp_path / "b")
    app = create_app({A.app_id: QueueApp(A, engine), B.app_id: QueueApp(B, other)},
                     operator_token=OPERATOR, viewer_token=VIEWER)
    test_server = TestServer(app, host="127.0.0.1")  # a free port on loopback
    await test_server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield Server(f"http://127.0.0.1:{test_server.port}", session, engine), gates
    finally:
        for event in gates.events.values():  # no run left waiting at a gate
            event.set()
        await test_server.close()


def q(selector: str) -> str:
    """A JavaScript expression: the element ``selector`` selects (or null)."""
    return f"document.querySelector({json.dumps(selector)})"


async def click(page: Page, selector: str, timeout_s: float = 10) -> None:
    await page.wait_for(f"!!{q(selector)} && !{q(selector)}.disabled", timeout_s)
    await page.evaluate(f"{q(selector)}.click()")


async def confirm(page: Page) -> None:
    await page.wait_for(f"!{q('#modal')}.hidden")
    await click(page, "[data-testid=confirm-ok]")
    await page.wait_for(f"{q('#modal')}.hidden")


async def go(page: Page, hash_: str) -> None:
    await page.evaluate(f"location.hash = {json.dumps(hash_)}")
    await page.wait_for(f"location.hash === {json.dumps(hash_)}")


CATCH_ERRORS = ("window.pageErrors = []; "
                "window.addEventListener('error', (e) => pageErrors.push(e.message)); "
                "window.addEventListener('unhandledrejection', "
                "(e) => pageErrors.push(String(e.reason))); "
                "document.addEventListener('securitypolicyviolation', "
                "(e) => pageErrors.push(`CSP refused ${e.violatedDirective}: ${e.blockedURI}`))")


async def sign_in(page: Page, secret: str, app_id: str = "") -> None:
    await page.evaluate(CATCH_ERRORS)  # every script error from here on is kept
    await page.wait_for(f"!!{q('[data-testid=login]')}")
    await page.evaluate(f"{q('#login-app-id')}.value = {json.dumps(app_id)}; "
                        f"{q('#login-secret')}.value = {json.dumps(secret)}")
    await click(page, "[data-testid=login]")
    await page.wait_for(f"!!{q('[data-testid=state-count-total]')}")


def text(selector: str) -> str:
    return f"({q(selector)} ? {q(selector)}.textContent : '')"


async def task_page(page: Page, unique_id: str) -> None:
    await go(page, f"#/apps/{A.app_id}/tasks/{unique_id}")
    await page.wait_for(f"!!{q('#view')}.dataset.state")


def state_is(state: str) -> str:
    return f"{q('#view')}.dataset.state === {json.dumps(state)}"


def shots(page: Page) -> Any:
    async def shot(name: str) -> None:
        await page.screenshot(ARTIFACTS / f"dashboard-{name}.png")
    return shot


async def picture_for_the_readme(page: Page, queue: Server) -> None:
    """The overview after a minute of varied work (batches of tasks, one step apart), as
    docs/images/dashboard.png: only when asked for (CLOUDQUEUE_UPDATE_SCREENSHOTS=1)."""
    charts = "[data-testid=charts]"
    for size in (40, 90, 60, 120, 80, 30, 100, 70, 50, 110, 90):
        points = await page.evaluate(f"Number({q(charts)}.dataset.points)")
        tasks = ([{"function": "quick"}] * size
                 + [{"function": "flaky", "attempts": 0}] * (size // 20))
        async with queue.session.post(f"{queue.url}{TASKS}/batch", json={"tasks": tasks},
                                      headers=MASTER) as response:
            assert response.status == 200, await response.text()
        await page.wait_for(f"Number({q(charts)}.dataset.points) > {points}", 20)
    await page.evaluate(f"{q('#toast')}.hidden = true")
    await page.screenshot(README_PICTURE)


@pytest.mark.browser
@pytest.mark.timeout(300)
async def test_an_operator_watches_and_acts_on_the_queue_live(
        server: tuple[Server, Gates], chromium: str) -> None:
    queue, gates = server
    async with await Browser.launch(chromium) as browser:
        page = await browser.open(f"{queue.url}/dashboard/")
        await page.send("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                        deviceScaleFactor=1, mobile=False)
        shot = shots(page)

        # sign in with the operator token: the overview of the one app
        await sign_in(page, OPERATOR)
        assert await page.evaluate(f"{q('[data-testid=role]')}.dataset.role") == "operator"
        assert await page.evaluate("location.hash") == f"#/apps/{A.app_id}/overview"
        assert await page.evaluate("sessionStorage.length") == 1
        assert await page.evaluate("document.cookie") == ""

        # the task list: a task enqueued over REST appears without a reload
        await click(page, "[data-testid=nav-tasks]")
        await page.wait_for(f"!!{q('#view')}.dataset.loaded")
        await page.evaluate("window.notReloaded = true")
        unique_id = await queue.enqueue("report")
        row = f"[data-testid=task-row][data-unique-id='{unique_id}']"
        await page.wait_for(f"!!{q(row)}")
        await page.wait_for(f"{q(row)}.dataset.state === 'running'")
        assert await page.evaluate("window.notReloaded") is True
        await shot("tasks")

        # its page: the progress bar moves as the function reports, then the task succeeds
        await click(page, f"{row} a")
        bar = "[data-testid=progress-bar]"
        await page.wait_for(f"!!{q(bar)} && {q(bar)}.dataset.percent === '30'")
        assert await page.evaluate(text("[data-testid=progress-message]")) == \
            "copied the first third"
        gates.open(unique_id, 1)
        await page.wait_for(f"{q(bar)}.dataset.percent === '70'")
        assert await page.evaluate(text("[data-testid=progress-message]")) == \
            "copied most of it"
        await shot("task-progress")
        gates.open(unique_id, 2)
        await page.wait_for(state_is("success"))
        assert '"copied": 3' in await page.evaluate(text("[data-testid=result]"))

        # a task whose first run fails: the failed run in its history, then a retry succeeds
        failing = await queue.enqueue("flaky", attempts=0)
        await task_page(page, failing)
        await page.wait_for(state_is("failed"))
        runs = "[data-testid=run-row]"
        await page.wait_for(f"document.querySelectorAll({json.dumps(runs)}).length === 1")
        assert await page.evaluate(f"{q(runs)}.dataset.outcome") == "failed"
        assert "the mail server said no" in await page.evaluate(text("[data-testid=run-error]"))
        assert "RuntimeError" in await page.evaluate(text("[data-testid=traceback]"))
        await click(page, "[data-testid=retry]")
        await confirm(page)
        await page.wait_for(state_is("success"))
        await page.wait_for(f"document.querySelectorAll({json.dumps(runs)}).length === 2")
        outcomes = await page.evaluate(
            f"[...document.querySelectorAll({json.dumps(runs)})].map(r => r.dataset.outcome)")
        assert outcomes == ["failed", "success"]
        action = "[data-testid=action-row]"
        await page.wait_for(f"!!{q(action)}")
        assert await page.evaluate(f"{q(action)}.dataset.action") == "retry"
        assert "via dashboard" in await page.evaluate(text(action))
        assert not await page.evaluate(f"!!{q('[data-testid=retry]')}")  # done: no retry now
        await page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        await shot("run-history")

        # the overview counts what happened, and charts it once the first step is sampled
        await go(page, f"#/apps/{A.app_id}/overview")
        await page.wait_for(f"{text('[data-testid=state-count-success]')} === '2'")
        charts = "[data-testid=charts]"
        await page.wait_for(f"Number({q(charts)}.dataset.points) >= 1", 20)
        assert await page.evaluate(
            f"{q(charts)}.querySelectorAll('svg path, svg circle').length") > 0
        await page.evaluate(f"{q('#toast')}.hidden = true")
        await shot("overview")
        if os.environ.get("CLOUDQUEUE_UPDATE_SCREENSHOTS") == "1":
            await picture_for_the_readme(page, queue)

        # pause: the banner shows; a task enqueued meanwhile waits, and its page says why
        await click(page, "[data-testid=pause]")
        await confirm(page)
        banner = "[data-testid=paused-banner]"
        await page.wait_for(f"!{q(banner)}.hidden")
        assert not await page.evaluate(f"!!{q('[data-testid=pause]')} && "
                                       f"!{q('[data-testid=pause]')}.hidden")
        waiting_id = await queue.enqueue("quick")
        await page.wait_for(f"{text('[data-testid=state-count-queued]')} === '1'")
        await shot("paused")
        await task_page(page, waiting_id)
        assert await page.evaluate(f"{q('#view')}.dataset.state") == "queued"
        waiting = "[data-testid=waiting]"
        await page.wait_for(f"!{q(waiting)}.hidden && {q(waiting)}.dataset.reason === 'paused'")
        assert "paused" in (await page.evaluate(text(waiting))).lower()
        assert (await queue.info(waiting_id))["state"] == "queued"
        await shot("paused-task")

        # resume: the task runs
        await go(page, f"#/apps/{A.app_id}/overview")
        await click(page, "[data-testid=resume]")
        await confirm(page)
        await page.wait_for(f"{q(banner)}.hidden")
        await task_page(page, waiting_id)
        await page.wait_for(state_is("success"))
        assert await page.evaluate(f"{q('[data-testid=waiting]')}.hidden")

        # the audit list names what the dashboard did
        await go(page, f"#/apps/{A.app_id}/audit")
        await page.wait_for("document.querySelectorAll('[data-testid=audit-row]').length >= 3")
        actions = await page.evaluate(
            "[...document.querySelectorAll('[data-testid=audit-row]')]"
            ".map(r => r.dataset.action)")
        assert actions[:3] == ["resume", "pause", "retry"]

        # no API error was shown on the way, and no script failed
        assert await page.evaluate(f"{q('#error-banner')}.hidden"), \
            await page.evaluate(text("#error-text"))
        assert await page.evaluate("window.pageErrors") == []


@pytest.mark.browser
@pytest.mark.timeout(120)
async def test_a_viewer_sees_everything_and_can_change_nothing(
        server: tuple[Server, Gates], chromium: str) -> None:
    queue, gates = server
    failed = await queue.enqueue("flaky", attempts=0)
    waiting = await queue.enqueue("quick", delay=3_600_000)
    async with await Browser.launch(chromium) as browser:
        page = await browser.open(f"{queue.url}/dashboard/")
        await page.send("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                        deviceScaleFactor=1, mobile=False)
        await sign_in(page, VIEWER)
        assert await page.evaluate(f"{q('[data-testid=role]')}.dataset.role") == "viewer"
        # the token covers both apps: the picker offers them, and switches the view's app
        picker = "[data-testid=app-picker]"
        assert await page.evaluate(f"[...{q(picker)}.options].map(o => o.value)") == [
            A.app_id, B.app_id]
        await page.evaluate(f"{q(picker)}.value = {json.dumps(B.app_id)}; "
                            f"{q(picker)}.dispatchEvent(new Event('change'))")
        await page.wait_for(f"location.hash === '#/apps/{B.app_id}/overview'")
        await page.wait_for(f"{text('[data-testid=state-count-total]')} === '0'")
        await go(page, f"#/apps/{A.app_id}/overview")
        await page.wait_for(f"{text('[data-testid=state-count-total]')} === '2'")
        assert await page.evaluate(f"!{q('[data-testid=pause]')}")
        assert await page.evaluate(f"!{q('[data-testid=resume]')}")

        await click(page, "[data-testid=nav-tasks]")
        await page.wait_for("document.querySelectorAll('[data-testid=task-row]').length === 2")
        assert await page.evaluate(f"!{q('[data-testid=bulk-actions]')}")

        await task_page(page, failed)
        await page.wait_for(state_is("failed"))
        await page.wait_for(f"!!{q('[data-testid=run-row]')}")
        await task_page(page, waiting)
        await page.wait_for(state_is("queued"))
        await page.wait_for(f"{q('[data-testid=waiting]')}.dataset.reason === 'delay'")
        for button in ("retry", "run-now", "cancel"):
            assert await page.evaluate(f"!{q(f'[data-testid={button}]')}"), button
        await page.evaluate("window.scrollTo(0, 0)")
        await page.screenshot(ARTIFACTS / "dashboard-viewer.png")

        assert await page.evaluate("window.pageErrors") == []

        # signing out forgets the credentials
        await click(page, "[data-testid=logout]")
        await page.wait_for(f"!!{q('[data-testid=login]')}")
        assert await page.evaluate("sessionStorage.length") == 0


@pytest.mark.browser
@pytest.mark.timeout(120)
async def test_a_master_key_signs_in_to_its_app_and_a_wrong_one_is_refused(
        server: tuple[Server, Gates], chromium: str) -> None:
    queue, _ = server
    async with await Browser.launch(chromium) as browser:
        page = await browser.open(f"{queue.url}/dashboard/")
        await page.wait_for(f"!!{q('[data-testid=login]')}")
        await page.evaluate(f"{q('#login-app-id')}.value = {json.dumps(A.app_id)}; "
                            f"{q('#login-secret')}.value = 'not-the-key'")
        await click(page, "[data-testid=login]")
        await page.wait_for(f"!{q('[data-testid=login-error]')}.hidden")
        assert A.app_id in await page.evaluate(text("[data-testid=login-error]"))
        assert await page.evaluate("sessionStorage.length") == 0

        await sign_in(page, A.master_key, A.app_id)
        assert await page.evaluate(f"{q('[data-testid=role]')}.dataset.role") == "master"
        assert await page.evaluate(f"{q('#app-picker-label')}.hidden")  # its one app only

        # a uniqueId that is no task says so
        await click(page, "[data-testid=nav-tasks]")
        await page.wait_for(f"!!{q('#view')}.dataset.loaded")
        await page.evaluate(f"{q('#search-id')}.value = 'no-such-task'")
        await click(page, "[data-testid=search-open]")
        await page.wait_for(f"!{q('[data-testid=search-error]')}.hidden")
        assert "No such task" in await page.evaluate(text("[data-testid=search-error]"))


@pytest.mark.browser
@pytest.mark.timeout(120)
async def test_schedules_are_paused_resumed_and_run_now_from_their_page(
        server: tuple[Server, Gates], chromium: str) -> None:
    queue, _ = server
    async with queue.session.put(
            f"{queue.url}/1.1/engine/cloud-queue/schedules/new-year",
            json={"function": "quick", "cron": "0 0 0 1 1 *", "timezone": "UTC"},
            headers=MASTER) as response:
        assert response.status == 200, await response.text()
    async with await Browser.launch(chromium) as browser:
        page = await browser.open(f"{queue.url}/dashboard/")
        await sign_in(page, OPERATOR)
        await click(page, "[data-testid=nav-schedules]")
        row = "[data-testid=schedule-row][data-name=new-year]"
        await page.wait_for(f"!!{q(row)}")
        assert await page.evaluate(f"{q(row)}.dataset.paused") == "false"
        # its next fire time: the coming 1 January, midnight UTC
        first = await page.evaluate(f"{q(row + ' time')}.getAttribute('datetime')")
        assert first.endswith("-01-01T00:00:00.000Z"), first

        await click(page, f"{row} [data-testid=schedule-pause]")
        await confirm(page)
        await page.wait_for(f"{q(row)}.dataset.paused === 'true'")
        await click(page, f"{row} [data-testid=schedule-resume]")
        await confirm(page)
        await page.wait_for(f"{q(row)}.dataset.paused === 'false'")

        # run now: one task at once, whose page opens and shows it done
        await click(page, f"{row} [data-testid=schedule-run-now]")
        await confirm(page)
        await page.wait_for("location.hash.includes('/tasks/')")
        await page.wait_for(state_is("success"))
        assert await page.evaluate(f"{q('#error-banner')}.hidden"), \
            await page.evaluate(text("#error-text"))


@pytest.mark.browser
@pytest.mark.timeout(120)
async def test_the_task_list_pages_filters_and_acts_by_filter(
        server: tuple[Server, Gates], chromium: str) -> None:
    queue, _ = server
    failed = [await queue.enqueue("flaky", attempts=0) for _ in range(3)]
    tasks = [{"function": "quick", "delay": 3_600_000}] * 57
    async with queue.session.post(f"{queue.url}{TASKS}/batch", json={"tasks": tasks},
                                  headers=MASTER) as response:
        assert response.status == 200, await response.text()
    for unique_id in failed:
        assert (await queue.engine.wait(unique_id, timeout=10_000)).status == "failed"
    rows = "document.querySelectorAll('[data-testid=task-row]')"
    async with await Browser.launch(chromium) as browser:
        page = await browser.open(f"{queue.url}/dashboard/")
        await page.send("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                        deviceScaleFactor=1, mobile=False)
        await sign_in(page, OPERATOR)

        # 60 tasks: a first page of 50 (newest first), the next one of 10, and back
        await click(page, "[data-testid=nav-tasks]")
        await page.wait_for(f"{rows}.length === 50")
        assert "60 tasks" in await page.evaluate(text("[data-testid=task-count]"))
        assert await page.evaluate(f"{q('[data-testid=first-page]')}.disabled")
        await click(page, "[data-testid=next-page]")
        await page.wait_for(f"{rows}.length === 10")
        last_page = await page.evaluate(f"[...{rows}].map(r => r.dataset.uniqueId)")
        assert sorted(last_page[-3:]) == sorted(failed)  # the oldest: enqueued first
        assert await page.evaluate(f"{q('[data-testid=next-page]')}.disabled")
        await click(page, "[data-testid=first-page]")
        await page.wait_for(f"{rows}.length === 50")

        # filtered by state (server-side): the three failed tasks
        await page.evaluate(f"{q('#filter-state')}.value = 'failed'")
        await click(page, "[data-testid=apply-filters]")
        await page.wait_for("location.hash.includes('state=failed')")
        await page.wait_for(f"{rows}.length === 3 && [...{rows}].every("
                            "r => r.dataset.state === 'failed')")

        # retry by this filter: the dry run's exact count first, then the retry; the list,
        # read again, has no failed task left, and the three succeed
        await click(page, "[data-testid=bulk-retry]")
        await page.wait_for(f"!{q('#modal')}.hidden")
        assert await page.evaluate(text("[data-testid=bulk-count]")) == "3"
        assert [(await queue.info(u))["state"] for u in failed] == ["failed"] * 3  # dry run
        await confirm(page)
        await page.wait_for(f"{text('[data-testid=toast]')} === 'Retried 3 tasks.'")
        await page.wait_for(f"{rows}.length === 0 && !!{q('.empty-row')}")
        for unique_id in failed:
            assert (await queue.engine.wait(unique_id, timeout=10_000)).status == "success"
        await click(page, "[data-testid=tab-success]")
        await page.wait_for(f"{rows}.length === 3")
        assert sorted(await page.evaluate(f"[...{rows}].map(r => r.dataset.uniqueId)")) == \
            sorted(failed)
        # what does not apply to successful tasks is not offered
        assert await page.evaluate(f"{q('[data-testid=bulk-retry]')}.disabled")
        assert await page.evaluate(f"{q('[data-testid=bulk-cancel]')}.disabled")
        assert not await page.evaluate(f"{q('[data-testid=bulk-purge]')}.disabled")
        await page.screenshot(ARTIFACTS / "dashboard-bulk-retry.png")
        assert await page.evaluate("window.pageErrors") == []
