"""A task's run history: one compact record per run, derived in the fold from the run events.

Every run that ended leaves a ``RunRecord`` on its task (``Task.runs``, oldest first, the last
``KEPT_RUNS``): when it started and ended, as which attempt and slice, how it ended
(``RunOutcome``), and the HTTP status, error and traceback it ended with. The fold
(``engine.core.fold``) appends one for each ``RunSucceeded``, ``RunFailed``, ``RunRequeued`` and
``RunContinued`` it applies, so the live core, a replay of the log and a restore from a
snapshot (where the history is a column of the task's row) hold the same history. A run still
in flight is not stored: task info shows it as a last entry without an end
(``in_flight``).

Memory: a task that never ran holds the one empty tuple; a record is a plain tuple (a
``NamedTuple``) whose outcome is one of the ``RunOutcome`` members and whose times are the
events' own int objects. At most one record of a task keeps a traceback (its latest failed run
that had one): a newer one drops the older (``with_run``). Pure.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NamedTuple

from cloudqueue.engine.core.events import FailureKind

KEPT_RUNS = 20  # the runs a task keeps (task info shows the latest, a run in flight included)

# A traceback kept with a failed run is cut to this many characters, keeping its end (the
# innermost frames and the exception).
MAX_TRACEBACK_CHARS = 8 * 1024

# The reason the core gives a run it hands back after a restart (atLeastOnce): how a requeued
# run lost in a restart is told from one whose host was unreachable.
RESTART_REASON = "the queue restarted during the run"

# What the core and the HTTP invoker wrote for a timed-out run before timeouts had a failure
# kind of their own (``FailureKind.TIMEOUT``): such a record still reads as a timeout.
_LEGACY_TIMEOUT = "cloud function timed out after "


class RunOutcome(StrEnum):
    """How a run ended (the ``outcome`` of an entry of ``runs`` in task info)."""

    SUCCESS = "success"  # the function returned a result
    FAILED = "failed"  # it failed: an error, an unknown outcome, an unstorable result ...
    TIMEOUT = "timeout"  # no answer within the task's timeout
    UNAVAILABLE = "unavailable"  # the function host could not be reached: no attempt spent
    LOST = "lost"  # the queue restarted while it ran (run again under atLeastOnce)
    CONTINUED = "continued"  # it asked to be called again from a checkpoint (next slice)


_OUTCOMES: dict[Any, RunOutcome] = {outcome.value: outcome for outcome in RunOutcome}


class RunRecord(NamedTuple):
    """One run of a task. Times are epoch ms; ``finished_ms`` and ``outcome`` are None for the
    run in flight that task info shows last."""

    attempt: int
    slice: int
    started_ms: int
    finished_ms: int | None = None
    outcome: str | None = None  # a RunOutcome (any other string: one a newer queue sent)
    status_code: int | None = None
    error: str | None = None
    traceback: str | None = None

    @property
    def duration_ms(self) -> int | None:
        return None if self.finished_ms is None else self.finished_ms - self.started_ms


class ActionRecord(NamedTuple):
    """An operator action on one task (``actions`` in task info): when, what (``retry``,
    ``run_now``, ``cancel``), by which credential (``master``, ``operator``, ``embedded``), via
    what the caller said it is (``cli``, ``dashboard``), and whether it was a bulk action."""

    at_ms: int
    action: str
    by: str
    via: str | None = None
    bulk: bool = False


KEPT_ACTIONS = 10  # the operator actions a task keeps, the latest


def with_action(actions: tuple[ActionRecord, ...], record: ActionRecord
                ) -> tuple[ActionRecord, ...]:
    """``actions`` with ``record`` appended, the oldest dropped past ``KEPT_ACTIONS``."""
    return (*actions, record)[-KEPT_ACTIONS:]


def actions_to_row(actions: tuple[ActionRecord, ...]) -> Any:
    """The actions as a snapshot row stores them: None when none, else ``[at, action, by,
    via, bulk]`` each."""
    return [list(record) for record in actions] if actions else None


def actions_from_row(stored: Any) -> tuple[ActionRecord, ...]:
    return tuple(ActionRecord(*row) for row in stored) if stored else ()


def failure_outcome(kind: FailureKind, error: str, status_code: int | None) -> RunOutcome:
    """The outcome of a ``RunFailed`` of ``kind``."""
    if kind is FailureKind.TIMEOUT:
        return RunOutcome.TIMEOUT
    if kind is FailureKind.LOST:
        return RunOutcome.LOST
    if (kind is FailureKind.UNKNOWN and status_code is None
            and error.startswith(_LEGACY_TIMEOUT) and error.endswith(" ms")):
        return RunOutcome.TIMEOUT  # written before FailureKind.TIMEOUT existed
    return RunOutcome.FAILED


def requeue_outcome(reason: str) -> RunOutcome:
    """The outcome of a ``RunRequeued`` with ``reason``."""
    return RunOutcome.LOST if reason == RESTART_REASON else RunOutcome.UNAVAILABLE


def with_run(runs: tuple[RunRecord, ...], record: RunRecord) -> tuple[RunRecord, ...]:
    """``runs`` with ``record`` appended, the oldest dropped past ``KEPT_RUNS``. A record with a
    traceback takes it from any earlier one: a task keeps at most one."""
    if record.traceback is not None and runs:
        runs = tuple(r._replace(traceback=None) if r.traceback is not None else r for r in runs)
    if len(runs) >= KEPT_RUNS:
        return (*runs[len(runs) - KEPT_RUNS + 1:], record)
    return (*runs, record)


def in_flight(runs: tuple[RunRecord, ...], attempt: int, slice_: int,
              started_ms: int) -> tuple[RunRecord, ...]:
    """The history task info shows while a run is in flight: the kept runs (the oldest dropped
    to stay within ``KEPT_RUNS``), then the run in flight, without an end."""
    return with_run(runs, RunRecord(attempt, slice_, started_ms))


def storable_traceback(text: str) -> str:
    """``text`` cut to at most ``MAX_TRACEBACK_CHARS``, keeping its end from a line's start (the
    innermost frames and the exception); the line after the header says what was left out."""
    if len(text) <= MAX_TRACEBACK_CHARS:
        return text
    kept = text[len(text) - MAX_TRACEBACK_CHARS + 100:]  # room for the header
    newline = kept.find("\n")
    if 0 <= newline < len(kept) - 1:
        kept = kept[newline + 1:]
    return (f"Traceback (most recent call last):\n  ... ({len(text) - len(kept)} characters "
            f"of outer frames left out)\n{kept}")


def runs_to_row(runs: tuple[RunRecord, ...]) -> Any:
    """The history as a snapshot row stores it: None when empty, else one array per run
    (``[attempt, slice, started, finished, outcome, statusCode, error, traceback]``, trailing
    nulls left out)."""
    if not runs:
        return None
    rows = []
    for run in runs:
        row = list(run)
        while row[-1] is None:
            row.pop()
        if len(row) > 4:
            row[4] = str(row[4])
        rows.append(row)
    return rows


def runs_from_row(stored: Any) -> tuple[RunRecord, ...]:
    """The history a row stored (``runs_to_row``); the empty tuple for None."""
    if not stored:
        return ()
    runs = []
    for row in stored:
        if len(row) > 4:
            row = [*row[:4], _OUTCOMES[row[4]], *row[5:]]
        runs.append(RunRecord(*row))
    return tuple(runs)


def outcome_named(value: str) -> str:
    """The ``RunOutcome`` named ``value``, or ``value`` itself if it names none (a client of an
    older version reading a newer queue's answer)."""
    return _OUTCOMES.get(value, value)
