"""Headless Chromium for page tests, driven over the DevTools protocol (no extra package).

    async with Browser.launch() as browser:
        page = await browser.open("http://127.0.0.1:3000/")
        title = await page.evaluate("document.title")
        png = await page.screenshot()

Uses Debian's ``chromium`` (``CHROMIUM`` overrides the binary), with the flags this machine
needs: no sandbox as root, no GPU, and no background networking (the network beyond 127.0.0.1
is closed). ``find_chromium()`` returns None when there is none.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         "--window-size=900,640"]
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


def find_chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(Exception):
    pass


class Page:
    def __init__(self, browser: Browser, session_id: str) -> None:
        self._browser, self.session_id = browser, session_id

    async def send(self, method: str, **params: Any) -> Any:
        return await self._browser.send(method, session_id=self.session_id, **params)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited if it is a promise)."""
        answer = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression!r} threw: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 30) -> Any:
        """Poll ``expression`` every 50 ms until it is truthy; its value."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout_s
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if loop.time() > give_up:
                raise TimeoutError(f"{expression!r} still falsy after {timeout_s} s")
            await asyncio.sleep(0.05)

    async def screenshot(self, path: Path | None = None) -> bytes:
        answer = await self.send("Page.captureScreenshot", format="png")
        png = base64.b64decode(answer["data"])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png)
        return png


class Browser:
    def __init__(self, process: asyncio.subprocess.Process, profile: str,
                 session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._process, self._profile, self._session, self._ws = process, profile, session, ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.console: list[str] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def launch(cls, binary: str | None = None, start_timeout_s: float = 30) -> Browser:
        binary = binary or find_chromium()
        if binary is None:
            raise BrowserError("no chromium found (install Debian's chromium, or set CHROMIUM)")
        profile = tempfile.mkdtemp(prefix="cq-chromium-")
        process = await asyncio.create_subprocess_exec(
            binary, *FLAGS, f"--user-data-dir={profile}", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            url = await asyncio.wait_for(cls._devtools_url(process), start_timeout_s)
            session = aiohttp.ClientSession()
            ws = await session.ws_connect(url, max_msg_size=64 * 1024 * 1024)
        except BaseException:
            process.kill()
            await process.wait()
            shutil.rmtree(profile, ignore_errors=True)
            raise
        return cls(process, profile, session, ws)

    @staticmethod
    async def _devtools_url(process: asyncio.subprocess.Process) -> str:
        assert process.stderr is not None
        seen: list[str] = []
        while True:
            line = (await process.stderr.readline()).decode(errors="replace")
            if not line:
                raise BrowserError("chromium exited before DevTools listened:\n"
                                   + "".join(seen[-20:]))
            seen.append(line)
            match = _LISTENING.search(line)
            if match:
                return match.group(1)

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", "")))
                                             for a in args))
            future = self._pending.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                if "error" in data:
                    future.set_exception(BrowserError(str(data["error"])))
                else:
                    future.set_result(data.get("result", {}))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrowserError("the DevTools connection closed"))

    async def send(self, method: str, session_id: str | None = None, **params: Any) -> Any:
        message_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session_id is not None:
            message["sessionId"] = session_id
        await self._ws.send_str(json.dumps(message))
        return await asyncio.wait_for(future, 30)

    async def open(self, url: str) -> Page:
        """A new tab showing ``url`` (loaded), with console messages collected."""
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send("Target.attachToTarget", targetId=target["targetId"],
                                   flatten=True)
        page = Page(self, attached["sessionId"])
        await page.send("Runtime.enable")
        await page.send("Page.enable")
        await page.send("Page.navigate", url=url)
        await page.wait_for("location.href !== 'about:blank' && "
                            "document.readyState === 'complete'")
        return page

    async def close(self) -> None:
        self._reader.cancel()
        await self._ws.close()
        await self._session.close()
        if self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 10)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
