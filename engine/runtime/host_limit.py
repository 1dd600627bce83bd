"""Host-adaptive concurrency: as many runs in flight as the function host takes without slowing.

An app's ``concurrency`` says how many runs the queue may keep in flight at its function host.
Too few and a backlog drains slower than the host could take it; too many and the host slows
for everyone (its latency grows with its load), then answers 503 or times out, and each of those
spends one of the task's attempts. With ``host_concurrency = "adaptive"`` the queue finds the
number itself: it raises runs in flight while the host's latency stays flat, and backs off when
the latency rises or the host errs. ``concurrency`` becomes the ceiling, 1 the floor.

The rule: AIMD on latency against a baseline
--------------------------------------------

:class:`HostLimit` is fed every finished run: its latency (ms on the engine's clock, from the call
to its answer), whether the *host* failed it, and how many runs were in flight. It works in
**rounds**: a round closes once it holds ``max(limit, min_round)`` answers, about one round-trip
of runs at the current limit, and is judged by its **median latency**:

* the **baseline** is the lowest round median seen since the last probe (below);
* a round whose median is above ``threshold = max(baseline * tolerance, baseline + min_rise_ms)``
  shows the load: the limit is multiplied by ``backoff`` (0.9);
* any other round, if the limit was in use (at some point in the round at least half of it was in
  flight: an idle queue proves nothing about the host), raises the limit by one;
* a host error (below) multiplies the limit by ``error_backoff`` (0.5) at once;
* after a decrease, answers to runs started before it (they carry an older ``epoch``) are left
  out: they tell of the load that caused the decrease, and would only cause it again;
* every ``probe_every`` rounds one round runs at half the limit and its median becomes the
  baseline: a host that has become slower for good (or a new mix of functions) is re-measured
  instead of being held to an old baseline, and the baseline cannot creep up with the load
  (between probes it only goes down).

A **host error** is the host failing the call, not the function failing its task: a 429, a 5xx
that is not the function's own ``{code, error}`` answer (a proxy's 502/503/504, a server's error
page), LeanEngine's own timeout (code 124), no answer before the run's timeout, a connection
refused or broken (``adapters/http_invoker/outcome.py`` marks them, ``Failed.host_error``). A
function that raises, or answers a LeanCloud error of its own (400, or 500 ``{"code": 1, ...}``),
is a normal answer: its latency counts, its failure does not.

Why this rule and not a gradient limiter
-----------------------------------------

Netflix's Gradient2 compares each latency sample with a long-term exponential average of them
and moves the limit toward ``limit * min(1, long / sample)`` plus a queue allowance (4 by
default): while the two are close, the limit grows. Under a sustained overload the long-term
average follows the samples up, the ratio returns to 1, and the limit keeps growing until the
host errs; and Gradient2 does not look at errors (drops) at all. A function host with a hard
limit (503 past it) is exactly where that drift ends in errors the queue caused. Anchoring the
baseline to the lowest median, refreshed only by a probe at half the limit, cannot drift that
way; AIMD (the rule of TCP and of ``pacing.RunCap``) converges and is easy to predict; and
judging a round by its median keeps one slow run (a cold start, a garbage collection) from
counting as load.

What it cannot tell: the baseline is the app's, not one per function, so a backlog that turns
from fast functions to slow ones looks like load until the next probe re-measures it; a function
whose latency varies a lot from run to run needs a round median that is stable, which the rounds
of at least ``min_round`` answers give.

A worked example
----------------

A host that answers in 20 ms with up to 16 requests in flight, and 2 ms slower for each one
beyond (the model of ``benchmarks/_load_host.py``), ``concurrency = 64``, the defaults: the first
round's median is 20 ms, so the threshold is 30 ms. The limit starts at 1 and gains one a round
(4 answers while it is under 4, then one round-trip each): 16 after 0.4 s. Rounds at 17 ... 21
in flight have medians of 22 ... 30 ms, within the threshold, and so does the first round at 22
(half of its answers are from runs started at 21); at 23 the median is 34 ms: x0.9, to 20.7
(20 runs). Then it climbs again, one a round, and backs off from 23 to 20 or 21: it cycles
between 20 and 23 in flight at a median of ~30 ms, ~700 tasks/s (659/s over 3,000 tasks, the
climb included) against the host's best of 800/s (16 in flight). Fixed at 64, the same host
would have 48 in flight (84 ms each, 571 tasks/s) and answer 503 to the rest.
``tests/runtime/test_host_limit.py`` plays this host, and ``benchmarks/bench_host_load.py``
runs it as a real process.

The rule is pure and deterministic: time comes in as each answer's latency, and nothing here
reads a clock. The driver (``driver.py``) feeds it and applies ``min(loop-lag cap, host limit)``
as the core's ``run_cap``: the loop-lag rule (``pacing.py``) still protects the queue's own
acknowledgements, this one protects the host.
"""

from __future__ import annotations

TOLERANCE = 1.5  # a round median this many times the baseline shows the load
MIN_RISE_MS = 5.0  # ... and at least this many ms above it (jitter of very fast functions)
BACKOFF = 0.9  # the limit after a slow round
ERROR_BACKOFF = 0.5  # the limit after a host error
MIN_ROUND = 4  # answers a round needs at least (a median of one answer is noise)
PROBE_EVERY = 100  # rounds between two re-measurements of the baseline at half the limit


class HostLimit:
    """How many runs to keep in flight at the host, between ``floor`` and ``ceiling``; starts at
    ``floor``. Feed every answer to :meth:`observe`; read :attr:`limit`."""

    def __init__(self, ceiling: int, *, floor: int = 1, tolerance: float = TOLERANCE,
                 min_rise_ms: float = MIN_RISE_MS, backoff: float = BACKOFF,
                 error_backoff: float = ERROR_BACKOFF, min_round: int = MIN_ROUND,
                 probe_every: int = PROBE_EVERY) -> None:
        if ceiling < 1 or not 1 <= floor <= ceiling:
            raise ValueError(f"need 1 <= floor <= ceiling, got floor {floor}, ceiling {ceiling}")
        for name, factor in (("backoff", backoff), ("error_backoff", error_backoff)):
            if not 0 < factor < 1:
                raise ValueError(f"{name} must be between 0 and 1, got {factor}")
        if tolerance <= 1 or min_rise_ms < 0 or min_round < 1 or probe_every < 1:
            raise ValueError("need tolerance > 1, min_rise_ms >= 0, min_round >= 1 and "
                             "probe_every >= 1")
        self.ceiling, self.floor = ceiling, floor
        self.tolerance, self.min_rise_ms = tolerance, min_rise_ms
        self.backoff, self.error_backoff = backoff, error_backoff
        self.min_round, self.probe_every = min_round, probe_every
        self._limit = float(floor)
        self._probe: int | None = None  # the limit while a probe round runs
        self.epoch = 0  # moves on at every decrease: answers to older runs are left out
        self.baseline_ms: float | None = None  # the lowest round median since the last probe
        self.latency_ms: float | None = None  # the last round's median
        self.rounds = 0
        self.backoffs = 0  # decreases: slow rounds and host errors
        self.host_errors = 0  # host errors seen (also those of runs started before a decrease)
        self._round: list[float] = []
        self._in_use = False  # at least half the limit was in flight during this round

    @property
    def limit(self) -> int:
        return self._probe if self._probe is not None else int(self._limit)

    @property
    def probing(self) -> bool:
        return self._probe is not None

    @property
    def threshold_ms(self) -> float | None:
        """A round median above this shows the load (None until the first round)."""
        if self.baseline_ms is None:
            return None
        return max(self.baseline_ms * self.tolerance, self.baseline_ms + self.min_rise_ms)

    def observe(self, latency_ms: float, *, epoch: int, in_flight: int,
                host_error: bool = False) -> int:
        """One answer: its latency, the ``epoch`` read when its run was started, how many runs
        were in flight as it finished (itself included), whether the host failed it. Returns
        the limit it leaves."""
        if host_error:
            self.host_errors += 1
            if epoch == self.epoch:
                self._decrease(self.error_backoff)
            return self.limit
        if epoch != self.epoch:
            return self.limit  # a run started before the last decrease
        self._round.append(latency_ms)
        if in_flight * 2 >= self.limit:
            self._in_use = True
        if len(self._round) >= max(self.limit, self.min_round):
            self._close_round()
        return self.limit

    def _close_round(self) -> None:
        ordered = sorted(self._round)
        median = ordered[(len(ordered) - 1) // 2]  # the lower median: always an answer's own
        in_use = self._in_use
        self._round, self._in_use = [], False
        self.latency_ms = median
        self.rounds += 1
        if self._probe is not None:  # the probe's round: the baseline is measured afresh
            self._probe = None
            self.baseline_ms = median
        else:
            if self.baseline_ms is None or median < self.baseline_ms:
                self.baseline_ms = median
            threshold = self.threshold_ms
            assert threshold is not None
            if median > threshold:
                self._decrease(self.backoff)
            elif in_use:
                self._limit = min(float(self.ceiling), self._limit + 1)
        if self.rounds % self.probe_every == 0:
            self._probe = max(self.floor, int(self._limit) // 2)
            self.epoch += 1  # the probe measures runs started at its own limit only

    def _decrease(self, factor: float) -> None:
        self._probe = None
        self._limit = max(float(self.floor), self._limit * factor)
        self.backoffs += 1
        self.epoch += 1
        self._round, self._in_use = [], False
