"""The soak test's open-loop load generator, a process of its own.

``python -m tests.soak.load --port P --rate R --seconds S --out DIR [--seed N]`` sends, to
127.0.0.1:P only, ``R * S`` requests, request ``i`` scheduled at ``t0 + i / R`` and sent then
whatever the earlier ones are doing (open loop). Each is drawn (seeded) from ``VARIANTS``:

* ``valid.*``: enqueues of the host's ``soak`` function (``tests/soak/host.py``) that succeed
  quickly, fail (raise / CloudError), hang past their timeout, answer 3 MiB (``big``) or 12 MiB
  (``huge``, over the invoker's 8 MiB cap), or name a function the host does not have; most
  carry a uniqueId of ours, some let the server choose one. An
  answer 200 ``{"uniqueId"}`` makes the task *acknowledged*: it goes to ``DIR/acked.tsv``.
* ``invalid.*``: well-formed HTTP with a bad body: bad options, wrong types, integers beyond 64
  bits, NaN / Infinity tokens, a held uniqueId (409). Each must be refused with its status.
* ``hostile.*``: bad or missing credentials, non-UTF-8 header bytes, malformed JSON, a garbage
  request line, a header over aiohttp's 8,190 bytes, bodies over the 1 MiB limit, requests cut
  off mid-headers or mid-body; and, beside the schedule, a few slow-header clients (half a
  request line, then nothing) held open up to ``SLOW_HOLD_S`` (the server's header deadline,
  10 s by default, should answer them 408 first).

Bounded: ``R * S`` requests at most, none sent past ``S`` seconds, nothing awaited past
``S + GRACE_S``, at most ``MAX_IN_FLIGHT`` open at once (a request whose moment comes while that
many are open is *dropped*, counted, never sent). Valid and invalid requests share keep-alive
connections; hostile ones each get a connection of their own.

Every answer is checked as it comes (``check``): its body must be JSON, an error must carry
``code`` and ``error``, a 5xx is always a violation, and each variant has the statuses it may
get. What went wrong is counted and sampled in ``DIR/load.json`` with the counts by variant and
status and the ack latencies. Once a second a line ``P <elapsed_s> <sent> <answered> <acked>`` on
stdout tells the test how far it got (the test pairs the server's RSS with the acked count).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cloudqueue.adapters.auth import sign
from tests.soak import rawhttp

HOST = "127.0.0.1"
TASKS = "/1.1/engine/cloud-queue/tasks"
APP_ID, APP_KEY, MASTER_KEY = "soak", "soak-app-key-0123456789", "soak-master-key-0123456789"
KEEP_RESULT_MS = 6 * 3600 * 1000  # every ordinary task stays readable through the whole test
BIG_KEEP_RESULT_MS = 20_000  # 3 MiB results are not kept for hours (see test_soak's memory check)
BIG_TIMEOUT_MS = 15_000
BIG_MIB = 3
HUGE_MIB = 12  # over the invoker's 8 MiB cap on an answer: the run must fail, the queue live on
HANG_TIMEOUT_MS = 300
HANG_SLEEP_MS = 1_500  # the host answers long after the queue gave up on the run
MAX_IN_FLIGHT = 512
REQUEST_TIMEOUT_S = 30.0  # an answer later than this is a violation ("no answer")
GRACE_S = 35.0
IDLE_MAX_S = 5.0  # pooled connections idle longer are closed, never reused (server keep-alive)
SLOW_CLIENTS = 6  # slow-header clients open at once
SLOW_HOLD_S = 30.0  # each holds its half request line this long (unless the server hangs up)
SLOW_EVERY_S = 3.0
SAMPLES = 20

MASTER = {"X-LC-Id": APP_ID, "X-LC-Sign": sign(MASTER_KEY, 1700000000000, master=True),
          "Content-Type": "application/json"}
MASTER_KEY_HEADERS = {"X-LC-Id": APP_ID, "X-LC-Key": f"{MASTER_KEY},master",
                      "Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class Request:
    data: bytes
    uid: str | None = None  # the uniqueId sent (valid requests with one)
    cls: str = ""  # valid requests: what the task does (the host's kind, or "unknown_fn")


@dataclass(frozen=True, slots=True)
class Variant:
    name: str  # "<group>.<what>"
    weight: float  # per 1,000 requests
    build: Callable[[int, Gen], Request]
    expect: frozenset[int] = frozenset({400})  # statuses it may get
    pooled: bool = True  # keep-alive connection shared with others; else one of its own
    mode: str = "answer"  # "answer" | "cut" (sent in part, then the connection is dropped)
    reset_ok: bool = False  # the server may reset before we read its answer (413 mid-upload)

    @property
    def group(self) -> str:
        return self.name.split(".", 1)[0]


# ------------------------------------------------------------------ request builders


def _post(body: bytes, headers: dict[str, str] = MASTER, raw: bytes = b"") -> bytes:
    return rawhttp.request_bytes("POST", TASKS, headers, body, raw_headers=raw)


def _own(data: bytes) -> bytes:
    """A request on a connection of its own: ask the server to close it after answering."""
    return data.replace(b"\r\n", b"\r\nConnection: close\r\n", 1)


def _valid(kind: str, function: str = "soak"):  # type: ignore[no-untyped-def]
    def build(i: int, gen: Gen) -> Request:
        uid = None if i % 10 == 3 and kind == "ok" else f"{gen.tag}-{i}"
        params = f'{{"kind":"{kind}","i":{i}'
        opts = f',"keepResult":{KEEP_RESULT_MS},"timeout":5000'
        if function != "soak":  # an unknown function: acknowledged, then the host answers 404
            opts += ',"attempts":0'
        elif kind == "ok":
            if i % 7 == 0:
                opts += ',"attempts":2,"backoff":100'
            if i % 11 == 0:
                opts += ',"deliveryMode":"atMostOnce"'
            if i % 13 == 0:
                opts += f',"priority":{i}'
            if i % 17 == 0:
                opts += ',"delay":200'
        elif kind in ("raise", "error"):
            opts += ',"attempts":1,"backoff":100'
        elif kind == "hang":
            params += f',"sleep_ms":{HANG_SLEEP_MS}'
            mode = "atMostOnce" if i % 2 else "atLeastOnce"
            opts = (f',"keepResult":{KEEP_RESULT_MS},"timeout":{HANG_TIMEOUT_MS},'
                    f'"attempts":1,"backoff":100,"deliveryMode":"{mode}"')
        elif kind in ("big", "huge"):  # the host's "big" kind, 3 MiB or 12 MiB
            params = (f'{{"kind":"big","i":{i},'
                      f'"mib":{BIG_MIB if kind == "big" else HUGE_MIB}')
            opts = f',"keepResult":{BIG_KEEP_RESULT_MS},"timeout":{BIG_TIMEOUT_MS},"attempts":0'
        body = f'{{"function":"{function}","params":{params}}}{opts}'
        if uid is not None:
            body += f',"uniqueId":"{uid}"'
        headers = MASTER if i % 2 else MASTER_KEY_HEADERS
        cls = kind if function == "soak" else "unknown_fn"
        return Request(_post((body + "}").encode(), headers), uid, cls)
    return build


def _invalid(fragment: str):  # type: ignore[no-untyped-def]
    """A body with ``fragment`` spliced in (fields after it override nothing: it is last)."""
    def build(i: int, gen: Gen) -> Request:
        return Request(_post(('{"function":"soak","params":{"kind":"ok"}' + fragment
                              + "}").encode()))
    return build


def _body(raw: bytes, own: bool = False):  # type: ignore[no-untyped-def]
    def build(i: int, gen: Gen) -> Request:
        data = _post(raw)
        return Request(_own(data) if own else data)
    return build


def _credentials(headers: dict[str, str], raw: bytes = b""):  # type: ignore[no-untyped-def]
    def build(i: int, gen: Gen) -> Request:
        return Request(_own(_post(b'{"function":"soak","params":{"kind":"ok"}}', headers, raw)))
    return build


def _raw(data: bytes):  # type: ignore[no-untyped-def]
    def build(i: int, gen: Gen) -> Request:
        return Request(data)
    return build


def _duplicate(i: int, gen: Gen) -> Request:
    uid = gen.recent[i % len(gen.recent)] if gen.recent else f"{gen.tag}-0"
    return Request(_post(f'{{"function":"soak","params":{{"kind":"ok"}},"uniqueId":"{uid}"}}'
                         .encode()))


def _nonutf8_get(i: int, gen: Gen) -> Request:
    return Request(_own(rawhttp.request_bytes(
        "GET", f"{TASKS}/{gen.tag}-0", {"X-LC-Id": APP_ID},
        raw_headers=b"X-LC-Key: \xff\xfe" + APP_KEY.encode() + b"\r\n")))


def _cut_body(i: int, gen: Gen) -> Request:
    body = b'{"function":"soak","params":{"kind":"ok","pad":"' + b"z" * 4000 + b'"}}'
    return Request(_post(body)[: -3000])  # headers promise 4 KiB; a quarter of it comes


def _cut_huge_length(i: int, gen: Gen) -> Request:
    head = rawhttp.request_bytes("POST", TASKS, MASTER)  # no Content-Length from request_bytes
    return Request(head[:-2] + b"Content-Length: 1099511627776\r\n\r\n" + b'{"function":')


def _cut_headers(i: int, gen: Gen) -> Request:
    return Request(_post(b'{"function":"soak"}')[:60])


_OVER = b'{"function":"soak","params":{"pad":"' + b"y" * (1024 * 1024 + 512) + b'"}}'
_DEEP = b"[" * 100_000
_TOO_DEEP_PARAMS = "[" * 70 + "]" * 70
_BAD_SIGN = {"X-LC-Id": APP_ID, "X-LC-Sign": "0" * 32 + ",1700000000000,master"}
_SIGN_UTF8 = b"X-LC-Sign: \xc3\x28" + b"0" * 30 + b",1700000000000,master\r\n"

VARIANTS: tuple[Variant, ...] = (
    # valid: 886 per 1,000
    Variant("valid.ok", 840, _valid("ok"), frozenset({200})),
    Variant("valid.raise", 12, _valid("raise"), frozenset({200})),
    Variant("valid.error", 12, _valid("error"), frozenset({200})),
    Variant("valid.hang", 8, _valid("hang"), frozenset({200})),
    Variant("valid.unknown_fn", 8, _valid("ok", "soak_missing"), frozenset({200})),
    Variant("valid.big", 0.5, _valid("big"), frozenset({200})),
    Variant("valid.huge", 0.2, _valid("huge"), frozenset({200})),
    # invalid: 3 per 1,000 each, ~90
    Variant("invalid.attempts_negative", 3, _invalid(',"attempts":-1')),
    Variant("invalid.attempts_string", 3, _invalid(',"attempts":"3"')),
    Variant("invalid.attempts_fraction", 3, _invalid(',"attempts":1.5')),
    Variant("invalid.backoff_negative", 3, _invalid(',"backoff":-1')),
    Variant("invalid.delay_string", 3, _invalid(',"delay":"soon"')),
    Variant("invalid.timeout_zero", 3, _invalid(',"timeout":0')),
    Variant("invalid.timeout_over_max", 3, _invalid(',"timeout":600001')),
    Variant("invalid.keepResult_bool", 3, _invalid(',"keepResult":true')),
    Variant("invalid.deliveryMode", 3, _invalid(',"deliveryMode":"sometimes"')),
    Variant("invalid.priority_string", 3, _invalid(',"priority":"high"')),
    Variant("invalid.uniqueId_empty", 3, _invalid(',"uniqueId":""')),
    Variant("invalid.uniqueId_space", 3, _invalid(',"uniqueId":"has space"')),
    Variant("invalid.uniqueId_long", 3, _invalid(',"uniqueId":"' + "u" * 33 + '"')),
    Variant("invalid.uniqueId_number", 3, _invalid(',"uniqueId":42')),
    Variant("invalid.uniqueId_null", 3, _invalid(',"uniqueId":null')),
    Variant("invalid.uniqueId_slash", 3, _invalid(',"uniqueId":"a/b"')),
    Variant("invalid.function_empty", 3, _body(b'{"function":"","params":{}}')),
    Variant("invalid.function_number", 3, _body(b'{"function":42,"params":{}}')),
    Variant("invalid.function_missing", 3, _body(b'{"params":{"kind":"ok"}}')),
    Variant("invalid.function_slash", 3, _body(b'{"function":"a/b"}')),
    Variant("invalid.params_too_deep", 3, _invalid(',"params":' + _TOO_DEEP_PARAMS)),
    Variant("invalid.nan_params", 3, _invalid(',"params":{"x":NaN}')),
    Variant("invalid.nan_priority", 3, _invalid(',"priority":NaN')),
    Variant("invalid.infinity_timeout", 3, _invalid(',"timeout":Infinity')),
    Variant("invalid.neg_infinity_delay", 3, _invalid(',"delay":-Infinity')),
    Variant("invalid.int_2p64_params", 3, _invalid(',"params":{"n":18446744073709551616}')),
    Variant("invalid.int_below_i64_params", 3,
            _invalid(',"params":[-9223372036854775809]')),
    Variant("invalid.int_2p64_priority", 3, _invalid(',"priority":18446744073709551616')),
    Variant("invalid.int_huge_delay", 3, _invalid(',"delay":' + "9" * 40)),
    Variant("invalid.int_5000_digits", 1, _invalid(',"params":{"n":' + "7" * 5000 + "}")),
    Variant("invalid.duplicate_uniqueId", 3, _duplicate, frozenset({409})),
    # hostile: ~45 per 1,000, each on a connection of its own
    Variant("hostile.bad_sign", 3, _credentials(_BAD_SIGN), frozenset({401}), False),
    Variant("hostile.app_key_enqueue", 3, _credentials({"X-LC-Id": APP_ID, "X-LC-Key": APP_KEY}),
            frozenset({403}), False),
    Variant("hostile.unknown_app", 3, _credentials({"X-LC-Id": "nosuchapp",
                                                     "X-LC-Key": f"{MASTER_KEY},master"}),
            frozenset({401}), False),
    Variant("hostile.no_credentials", 3, _credentials({}), frozenset({401}), False),
    Variant("hostile.garbage_sign", 2, _credentials({"X-LC-Id": APP_ID, "X-LC-Sign": "zzz"}),
            frozenset({401}), False),
    Variant("hostile.nonutf8_app_id", 2,
            _credentials({"X-LC-Key": f"{MASTER_KEY},master"}, b"X-LC-Id: \xff\xfe\r\n"),
            frozenset({400, 401}), False),
    Variant("hostile.nonutf8_key", 2,
            _credentials({"X-LC-Id": APP_ID}, b"X-LC-Key: \xc3\x28" + MASTER_KEY.encode()
                         + b",master\r\n"), frozenset({400, 401}), False),
    Variant("hostile.nonutf8_sign", 2, _credentials({"X-LC-Id": APP_ID}, _SIGN_UTF8),
            frozenset({400, 401}), False),
    Variant("hostile.nonutf8_key_get", 2, _nonutf8_get, frozenset({400, 401}), False),
    Variant("hostile.json_truncated", 2, _body(b'{"function":"soak","params":{', True),
            pooled=False),
    Variant("hostile.json_single_quotes", 2, _body(b"{'function': 'soak'}", True), pooled=False),
    Variant("hostile.json_not_utf8", 2, _body(b'{"function":"\xff\xfe"}', True), pooled=False),
    Variant("hostile.json_empty", 2, _body(b"", True), pooled=False),
    Variant("hostile.json_array", 2, _body(b'[{"function":"soak"}]', True), pooled=False),
    Variant("hostile.json_trailing", 2, _body(b'{"function":"soak"}{"x":1}', True),
            pooled=False),
    Variant("hostile.json_deep", 0.5, _body(_DEEP, True), pooled=False),
    Variant("hostile.bad_request_line", 1, _raw(b"GARBAGE \x00\xff\r\n\r\n"),
            frozenset({400}), False),
    Variant("hostile.header_too_long", 1, _credentials(
        {**MASTER, "X-Padding": "p" * 10_000}), frozenset({400, 413, 431}), False),
    Variant("hostile.oversized_body", 1, _body(_OVER, True), frozenset({413}), False,
            reset_ok=True),
    Variant("hostile.cut_mid_body", 3, _cut_body, frozenset(), False, "cut"),
    Variant("hostile.cut_huge_length", 1, _cut_huge_length, frozenset(), False, "cut"),
    Variant("hostile.cut_mid_headers", 1, _cut_headers, frozenset(), False, "cut"),
)
BY_NAME = {v.name: v for v in VARIANTS}


# ------------------------------------------------------------------ the generator


@dataclass
class Stats:
    counts: dict[str, Counter[str]] = field(default_factory=dict)  # variant -> status -> n
    violations: Counter[str] = field(default_factory=Counter)  # reason -> n
    samples: list[str] = field(default_factory=list)
    # valid acks: µs from the request's scheduled moment to its answer
    latencies_us: array[int] = field(default_factory=lambda: array("q"))
    acked: list[str] = field(default_factory=list)  # "uid\tcls\tack_ns"
    dropped: int = 0
    late: int = 0
    slow: Counter[str] = field(default_factory=Counter)  # how slow-header clients ended
    sampled: set[tuple[str, str]] = field(default_factory=set)
    slow_waits: list[float] = field(default_factory=list)  # how long each slow client lasted

    def count(self, variant: str, outcome: str) -> None:
        counter = self.counts.get(variant)
        if counter is None:
            counter = self.counts[variant] = Counter()
        counter[outcome] += 1

    def violation(self, reason: str, detail: str, variant: str = "") -> None:
        """Count it; keep the first example of each (reason, variant)."""
        self.violations[f"{reason} ({variant})" if variant else reason] += 1
        if len(self.samples) < SAMPLES and (reason, variant) not in self.sampled:
            self.sampled.add((reason, variant))
            self.samples.append(f"{reason}: {detail[:300]}")


def check(variant: Variant, request: Request, answer: rawhttp.Answer, stats: Stats) -> str | None:
    """Judge one answer; the uniqueId it acknowledged, if any."""
    status, body = answer.status, answer.body
    where = f"{variant.name} -> {status} {body[:160]!r}"
    if status >= 500:
        stats.violation(f"5xx on {variant.group}", where, variant.name)
    elif status not in variant.expect:
        stats.violation("unexpected status", where, variant.name)
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        stats.violation("answer not JSON", where, variant.name)
        return None
    if not isinstance(value, dict):
        stats.violation("answer not a JSON object", where, variant.name)
        return None
    if status >= 400:
        code = value.get("code")
        if isinstance(code, bool) or not isinstance(code, int) or not isinstance(
                value.get("error"), str):
            stats.violation("error without code/error", where, variant.name)
        return None
    if status == 200 and variant.group == "valid":
        uid = value.get("uniqueId")
        if not isinstance(uid, str) or not uid:
            stats.violation("200 without uniqueId", where, variant.name)
            return None
        if request.uid is not None and uid != request.uid:
            stats.violation("uniqueId changed", f"sent {request.uid}, got {uid}", variant.name)
        return uid
    return None


class Gen:
    def __init__(self, port: int, rate: int, seconds: float, seed: int, tag: str) -> None:
        self.port, self.rate, self.seconds, self.tag = port, rate, seconds, tag
        self.rng = random.Random(seed)
        self.count = int(rate * seconds)
        self.stats = Stats()
        self.idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = deque()
        self.in_flight = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.recent: list[str] = []  # acknowledged uniqueIds of ours, for the duplicate variant
        self.sent = self.answered = 0
        names = [v.name for v in VARIANTS]
        weights = [v.weight for v in VARIANTS]
        self.plan = self.rng.choices(names, weights, k=self.count)
        self.t0 = 0.0

    # ---------------------------------------------------------------- connections

    async def _pooled(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = time.monotonic()
        while self.idle:
            reader, writer, since = self.idle.pop()
            if now - since < IDLE_MAX_S and not reader.at_eof() and not writer.is_closing():
                return reader, writer
            rawhttp.close(writer)
        return await rawhttp.open_connection(HOST, self.port)

    # ---------------------------------------------------------------- one request

    async def _one(self, i: int, variant: Variant, scheduled: float) -> None:
        stats = self.stats
        request = variant.build(i, self)
        try:
            if variant.mode == "cut":
                await self._cut(request)
                stats.count(variant.name, "cut")
                return
            answer = await self._exchange(variant, request)
            self.answered += 1
            stats.count(variant.name, str(answer.status))
            uid = check(variant, request, answer, stats)
            if uid is not None:
                stats.acked.append(f"{uid}\t{request.cls}\t{time.monotonic_ns()}")
                stats.latencies_us.append(int((time.monotonic() - scheduled) * 1e6))
                if request.uid is not None and request.cls == "ok" and len(self.recent) < 4096:
                    self.recent.append(uid)
        except TimeoutError:
            stats.count(variant.name, "timeout")
            stats.violation("no answer in time", f"{variant.name} #{i}", variant.name)
        except (OSError, asyncio.IncompleteReadError, rawhttp.ProtocolError, ValueError) as exc:
            outcome = f"noanswer:{type(exc).__name__}"
            stats.count(variant.name, outcome)
            if not variant.reset_ok:
                stats.violation("no answer", f"{variant.name} #{i}: {type(exc).__name__}: {exc}",
                                variant.name)
        finally:
            self.in_flight -= 1

    async def _exchange(self, variant: Variant, request: Request) -> rawhttp.Answer:
        if not variant.pooled:
            return await rawhttp.one_shot(HOST, self.port, request.data, REQUEST_TIMEOUT_S)
        reader = writer = None
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                reader, writer = await self._pooled()
                writer.write(request.data)
                answer = await rawhttp.read_answer(reader)
        except BaseException:
            if writer is not None:
                rawhttp.close(writer, abort=True)
            raise
        if answer.closes:
            rawhttp.close(writer)
        else:
            self.idle.append((reader, writer, time.monotonic()))
        return answer

    async def _cut(self, request: Request) -> None:
        """Send part of a request, then drop the connection (RST, like a crashed client)."""
        reader, writer = await rawhttp.open_connection(HOST, self.port)
        try:
            writer.write(request.data)
            await writer.drain()
            await asyncio.sleep(0.05)
        finally:
            rawhttp.close(writer, abort=True)

    # ---------------------------------------------------------------- slow headers

    async def _slow_client(self, deadline: float) -> None:
        """Half a request line, then silence until SLOW_HOLD_S passes or the server answers or
        hangs up (a header deadline: 408 and close)."""
        stats = self.stats
        try:
            reader, writer = await rawhttp.open_connection(HOST, self.port)
        except OSError as exc:
            stats.slow[f"connect failed: {type(exc).__name__}"] += 1
            return
        start = time.monotonic()
        variant = Variant("hostile.slow_headers", 0, _raw(b""), frozenset({400, 408}), False)
        try:
            writer.write(b"POST /1.1/engine/cloud-queue/ta")
            hold = min(SLOW_HOLD_S, max(0.0, deadline - time.monotonic()))
            try:
                async with asyncio.timeout(hold):
                    answer = await rawhttp.read_answer(reader)
                stats.slow[f"answered {answer.status}"] += 1
                stats.count(variant.name, str(answer.status))
                check(variant, Request(b""), answer, stats)
            except TimeoutError:
                stats.slow["held open, closed by us"] += 1
            except asyncio.IncompleteReadError:
                stats.slow["closed by the server"] += 1
            stats.slow_waits.append(time.monotonic() - start)
        except (OSError, rawhttp.ProtocolError, ValueError) as exc:
            stats.slow[f"reset: {type(exc).__name__}"] += 1
        finally:
            rawhttp.close(writer, abort=True)

    async def _slow_clients(self, deadline: float) -> None:
        running: set[asyncio.Task[None]] = set()
        try:
            while time.monotonic() < deadline - 1:
                if len(running) < SLOW_CLIENTS:
                    task = asyncio.ensure_future(self._slow_client(deadline))
                    running.add(task)
                    task.add_done_callback(running.discard)
                await asyncio.sleep(SLOW_EVERY_S)
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    # ---------------------------------------------------------------- the schedule

    def _launch(self, i: int, scheduled: float) -> None:
        if self.in_flight >= MAX_IN_FLIGHT:
            self.stats.dropped += 1
            self.stats.count(self.plan[i], "dropped")
            return
        self.in_flight += 1
        self.sent += 1
        task = asyncio.ensure_future(self._one(i, BY_NAME[self.plan[i]], scheduled))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _schedule(self) -> None:
        period = 1 / self.rate
        i = 0
        while i < self.count:
            now = time.monotonic()
            if now >= self.t0 + self.seconds:
                break
            while i < self.count and self.t0 + i * period <= now:
                if now - (self.t0 + i * period) > 0.005:
                    self.stats.late += 1
                self._launch(i, self.t0 + i * period)
                i += 1
            if i < self.count:
                await asyncio.sleep(max(0.0, self.t0 + i * period - time.monotonic()))
        self.unsent = self.count - i

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            print(f"P {time.monotonic() - self.t0:.1f} {self.sent} {self.answered} "
                  f"{len(self.stats.acked)}", flush=True)

    async def _seed(self) -> None:
        """One task acknowledged before t0: the duplicate variant has a held uniqueId from the
        first request on."""
        uid = f"{self.tag}-seed"
        body = (f'{{"function":"soak","params":{{"kind":"ok"}},"keepResult":{KEEP_RESULT_MS},'
                f'"uniqueId":"{uid}"}}')
        request = Request(_post(body.encode()), uid, "ok")
        answer = await rawhttp.one_shot(HOST, self.port, request.data, REQUEST_TIMEOUT_S)
        if check(BY_NAME["valid.ok"], request, answer, self.stats) != uid:
            raise RuntimeError(f"the seed enqueue failed: {answer.status} {answer.body[:200]!r}")
        self.stats.acked.append(f"{uid}\tok\t{time.monotonic_ns()}")
        self.recent.append(uid)

    async def run(self, out: Path) -> None:
        await self._seed()
        self.t0 = time.monotonic() + 0.05
        cpu0 = time.process_time()
        progress = asyncio.ensure_future(self._progress())
        slow = asyncio.ensure_future(self._slow_clients(self.t0 + self.seconds))
        try:
            await self._schedule()
            pending: set[asyncio.Task[None]] = set()
            if self.tasks:
                _, pending = await asyncio.wait(set(self.tasks), timeout=GRACE_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if pending:
                self.stats.violation("no answer in time", f"{len(pending)} still open at the end")
            await slow
        finally:
            progress.cancel()
            slow.cancel()
            await asyncio.gather(progress, slow, return_exceptions=True)
            while self.idle:
                rawhttp.close(self.idle.pop()[1])
        self._write(out, time.monotonic() - self.t0, time.process_time() - cpu0)

    def _write(self, out: Path, wall_s: float, cpu_s: float) -> None:
        stats = self.stats
        (out / "acked.tsv").write_text("".join(line + "\n" for line in stats.acked))
        lat = sorted(stats.latencies_us)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] / 1000 if lat else 0.0

        summary = {
            "planned": self.count, "sent": self.sent, "unsent": self.unsent,
            "answered": self.answered, "acked": len(stats.acked),
            "dropped": stats.dropped, "late": stats.late, "wall_s": round(wall_s, 1),
            "cpu_s": round(cpu_s, 1),
            "counts": {k: dict(v) for k, v in sorted(stats.counts.items())},
            "violations": dict(stats.violations), "samples": stats.samples,
            "slow_clients": dict(stats.slow),
            "slow_client_s": [round(min(stats.slow_waits, default=0), 1),
                              round(max(stats.slow_waits, default=0), 1)],
            "ack_ms": {"p50": pct(50), "p99": pct(99), "p999": pct(99.9),
                       "max": lat[-1] / 1000 if lat else 0.0},
        }
        (out / "load.json").write_text(json.dumps(summary, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--seed", type=int, default=20261204)
    parser.add_argument("--tag", default="s", help="uniqueId prefix (<tag>-<i>)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    gen = Gen(args.port, args.rate, args.seconds, args.seed, args.tag)
    asyncio.run(gen.run(args.out))
    print("DONE", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
