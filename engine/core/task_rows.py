"""Tasks as rows: the body of a snapshot (``engine.runtime.snapshot``).

A row is an array with one value per column of ``TASK_COLUMNS``, in their order. Each column is
one declaration: the task attribute it holds, how its value is stored when not as it is, and the
row version that added it with the value that stands for it in rows written before. Adding a
task field that must survive a restart is one ``Column`` appended here (with ``since`` one
higher than the last): snapshots written before it still load, their rows getting the column's
``default``, and the snapshot carries the row version of its rows so a version that does not
know a column refuses the snapshot rather than dropping it. Never reorder or remove a column:
rows are on disk.

The columns of row version 1::

    [id, function, params, options, priority, seq, created_ms, state, attempt, run_seq,
     started_ms, finished_ms, status_code, error, retry_at_ms, schedule, result, progress,
     continuation]

``options`` is the dict of non-default fields (as in the log); ``result`` is ``[value]`` or null
while it is absent (a JSON null result is ``[null]``); ``progress`` is null or ``[progress,
progress_ms, [[t_ms, message], ...]]``; ``continuation`` null or ``[checkpoint, slices]``.

Row version 2 adds ``runs``: the task's run history (``engine.core.history.runs_to_row``), null
for a task that has not finished a run; rows of version 1 read with none. Row version 3 adds
``run_now_ms``: when an operator made the task ready at once (null: never). Row version 4 adds
``actions``: the operator actions on the task (``engine.core.history.actions_to_row``), null for
none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import MISSING, fields
from typing import Any, Generic, NamedTuple, TypeVar

from cloudqueue.engine.core.codec import (
    UnknownRecordKindError,
    decode_record,
    encode_record,
    options_from_dict,
    options_to_dict,
)
from cloudqueue.engine.core.history import (
    actions_from_row,
    actions_to_row,
    runs_from_row,
    runs_to_row,
)
from cloudqueue.engine.core.states import TaskState
from cloudqueue.engine.core.task import ABSENT, Task, pack_params, unpacked

_T = TypeVar("_T")


class Column(NamedTuple):
    """One column of a row (see the module's docstring)."""

    name: str  # the attribute it holds (a column over several attributes: its own name)
    since: int = 1  # the row version that added it
    default: Any = None  # the stored value rows written before ``since`` stand for
    store: Callable[[Any], Any] | None = None  # attribute value -> stored value (None: as is)
    load: Callable[[Any], Any] | None = None  # stored value -> attribute value (None: as is)
    # a column over several attributes: its stored value from the object, and back onto it
    take: Callable[[Any], Any] | None = None
    restore: Callable[[Any, Any], None] | None = None


class RowLayout(Generic[_T]):
    """Rows of ``cls`` objects made of ``columns``. The columns that are ``cls``'s required
    fields come first, in their order (they build the object; the others are set on it). Rows
    of an earlier row version (fewer columns) read with the later columns' defaults; a row of
    a later version than ``version`` refuses to load."""

    def __init__(self, cls: type[_T], columns: Sequence[Column]) -> None:
        self.columns = tuple(columns)
        self.version = max(c.since for c in self.columns)
        required = [f.name for f in fields(cls)  # type: ignore[arg-type]
                    if f.default is MISSING and f.default_factory is MISSING]
        named = [c.name for c in self.columns]
        sinces = [c.since for c in self.columns]
        if (named[:len(required)] != required or sinces != sorted(sinces) or sinces[0] != 1
                or not all(name.isidentifier() for name in named)):
            raise TypeError(f"the row of {cls.__name__} must begin with its required fields "
                            f"{required} and add columns only at its end")
        self._widths = {v: sinces.count(v) for v in range(1, self.version + 1)}
        self._defaults = [c.default for c in self.columns]
        self._what = f"{cls.__name__.lower()} row"
        self._to_row, self._from_row = _compile(cls, self.columns, len(required))

    def to_row(self, item: _T) -> list[Any]:
        """``item`` as a row of the current version."""
        return self._to_row(item)

    def from_row(self, row: Any, version: int) -> _T:
        """The object a row of ``version`` stands for. Raises ``UnknownRecordKindError``."""
        return self.from_rows([row], version)[0]

    def from_rows(self, rows: list[Any], version: int) -> list[_T]:
        """The objects rows of ``version`` stand for (a snapshot's chunk: one call for many
        rows). Raises ``UnknownRecordKindError`` for a row that is not one of ``version``, or a
        version later than this layout's."""
        if version.__class__ is not int or not 1 <= version <= self.version:
            raise UnknownRecordKindError(self._what, version)  # a later version wrote it
        read = self._from_row if version == self.version else self._older(version)
        try:
            return list(map(read, rows))
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            raise UnknownRecordKindError(self._what, version) from exc

    def _older(self, version: int) -> Callable[[Any], _T]:
        """Reads a row of an earlier version: its columns, then the later ones' defaults."""
        width = sum(self._widths[v] for v in range(1, version + 1))
        added = self._defaults[width:]

        def read(row: Any) -> _T:
            if len(row) != width:
                raise ValueError(f"a row of version {version} has {width} columns")
            return self._from_row([*row, *added])

        return read


def _compile(cls: type[_T], columns: tuple[Column, ...], required: int
             ) -> tuple[Callable[[_T], list[Any]], Callable[[Any], _T]]:
    """The two conversions, written out as plain functions (restoring a snapshot builds every
    task through them: a loop over the columns would double its cost)."""
    scope: dict[str, Any] = {"cls": cls}
    stored, values, builds, sets = [], [], [], []
    for i, column in enumerate(columns):
        name, value = column.name, f"c{i}"
        scope.update({f"take{i}": column.take, f"store{i}": column.store,
                      f"load{i}": column.load, f"restore{i}": column.restore})
        if column.take is not None:
            stored.append(f"take{i}(item)")
        else:
            stored.append(f"store{i}(item.{name})" if column.store else f"item.{name}")
        values.append(value)
        loaded = f"load{i}({value})" if column.load else value
        if i < required:
            builds.append(loaded)
        elif column.restore is not None:
            sets.append(f"    restore{i}(item, {value})")
        else:
            sets.append(f"    item.{name} = {loaded}")
    source = "\n".join([
        "def to_row(item):",
        f"    return [{', '.join(stored)}]",
        "def from_row(row):",
        f"    [{', '.join(values)}] = row",
        f"    item = cls({', '.join(builds)})",
        *sets,
        "    return item",
    ])
    exec(compile(source, f"<row of {cls.__name__}>", "exec"), scope)
    return scope["to_row"], scope["from_row"]


_STATES = {state.value: state for state in TaskState}


def _progress(task: Task) -> Any:
    if task.progress is None:
        return None
    return [task.progress, task.progress_ms, [list(m) for m in task.messages]]


def _restore_progress(task: Task, stored: Any) -> None:
    if stored is not None:
        task.progress, task.progress_ms = stored[0], stored[1]
        task.messages = tuple((int(t), str(m)) for t, m in stored[2])


def _restore_continuation(task: Task, stored: Any) -> None:
    if stored is not None:
        task.checkpoint, task.slices = stored


TASK_COLUMNS = (
    Column("unique_id"), Column("function"),
    Column("params", store=unpacked, load=pack_params),  # large params stay packed in memory
    Column("options", store=options_to_dict, load=options_from_dict),
    Column("priority"), Column("seq"), Column("created_ms"),
    Column("state", store=lambda state: state.value, load=_STATES.__getitem__),
    Column("attempt"), Column("run_seq"), Column("started_ms"), Column("finished_ms"),
    Column("status_code"), Column("error"), Column("retry_at_ms"), Column("schedule"),
    Column("result", store=lambda result: None if result is ABSENT else [result],
           load=lambda stored: ABSENT if stored is None else stored[0]),
    Column("progress", take=_progress, restore=_restore_progress),
    Column("continuation", take=lambda t: [t.checkpoint, t.slices] if t.slices else None,
           restore=_restore_continuation),
    Column("runs", since=2, default=None, store=runs_to_row, load=runs_from_row),
    # row version 3: when an operator made the task ready at once (its delay no longer holds)
    Column("run_now_ms", since=3),
    # row version 4: the operator actions on the task (``history.ActionRecord``)
    Column("actions", since=4, default=None, store=actions_to_row, load=actions_from_row),
)
TASK_ROWS = RowLayout(Task, TASK_COLUMNS)
ROW_VERSION = TASK_ROWS.version


def task_to_row(task: Task) -> list[Any]:
    """A live task's whole state (derived state is rebuilt on restore)."""
    return TASK_ROWS.to_row(task)


def task_from_row(row: Any, version: int = ROW_VERSION) -> Task:
    """The task of a row of ``version``. Raises ``UnknownRecordKindError`` for anything but a
    task row of a version this one knows."""
    return TASK_ROWS.from_row(row, version)


def tasks_from_rows(rows: list[Any], version: int) -> list[Task]:
    """``task_from_row`` over a snapshot's chunk of rows."""
    return TASK_ROWS.from_rows(rows, version)


# ---------------------------------------------------------------------- finished tasks, kept packed

_FIELDS = frozenset(f.name for f in fields(Task))
_FINAL_STATES = {state.value: state for state in TaskState if state.is_final}


class KeptTask(Task):
    """A finished task as a snapshot keeps it (``kept_from_items``): what the task table needs
    of it is set (uniqueId, state, seq, run seq, when its keepResult ends) and its row stays
    packed until anything else of it is first read; then the whole row is decoded into it, the
    fields already set keeping their values (they may have changed since). Most of what an
    app holds is finished tasks kept only for ``keepResult``, read by nobody: restoring them
    this way costs less than half of building each (``bench_log``'s ``restart_finished``),
    and a snapshot written again carries their rows
    through unread (``kept_items``). So a node that takes an app over, and a compaction, spend
    their time on the tasks that are still to run."""

    __slots__ = ("_packed", "_version", "_expires_ms")
    _packed: bytes | None  # the row, until it is decoded
    _version: int  # its row version
    _expires_ms: int  # when its keepResult ends

    def __getattr__(self, name: str) -> Any:
        # only reached for a slot not set yet: the row's fields, until it is decoded
        if name in _KEPT_SLOTS or name not in _FIELDS:
            raise AttributeError(name)
        packed = self._packed
        if packed is None:
            raise AttributeError(name)
        self._packed = None
        row = decode_record(packed)
        row[0] = self.unique_id  # (kept_items leaves it out of the packed row)
        full = TASK_ROWS.from_row(row, self._version)
        for field_name in _FIELDS:
            try:
                object.__getattribute__(self, field_name)
            except AttributeError:
                object.__setattr__(self, field_name, object.__getattribute__(full, field_name))
        return object.__getattribute__(self, name)

    @property
    def packed(self) -> bool:
        """Its row is not decoded yet."""
        return self._packed is not None

    def expires_at_ms(self) -> int:
        return self._expires_ms if self._packed is not None else Task.expires_at_ms(self)


_KEPT_SLOTS = frozenset(KeptTask.__slots__)
KEPT_WIDTH = 7  # the items of one kept task (kept_items)


def kept_items(task: Task) -> tuple[Any, ...]:
    """A finished task as a snapshot keeps it: ``(uniqueId, state, seq, run_seq, expires_ms,
    row_version, packed_row)``, the packed row's uniqueId null (it is the first item already); a
    ``KeptTask`` still packed hands its row on as it is."""
    if isinstance(task, KeptTask) and task._packed is not None:
        return (task.unique_id, task.state.value, task.seq, task.run_seq, task._expires_ms,
                task._version, task._packed)
    row = task_to_row(task)
    row[0] = None
    return (task.unique_id, task.state.value, task.seq, task.run_seq, task.expires_at_ms(),
            ROW_VERSION, encode_record(row))


def kept_from_items(items: list[Any]) -> list[Task]:
    """The finished tasks of a snapshot's kept chunk (``KEPT_WIDTH`` items each, flat).
    Raises ``UnknownRecordKindError`` for items that are not such tasks."""
    if len(items) % KEPT_WIDTH:
        raise UnknownRecordKindError("kept task", len(items))
    new, found = KeptTask.__new__, list[Task]()
    states, latest = _FINAL_STATES, ROW_VERSION
    try:
        for at in range(0, len(items), KEPT_WIDTH):
            unique_id, state, seq, run_seq, expires_ms, version, packed = \
                items[at:at + KEPT_WIDTH]
            if not (unique_id.__class__ is str and packed.__class__ is bytes
                    and version.__class__ is int and 1 <= version <= latest
                    and seq.__class__ is int and run_seq.__class__ is int
                    and expires_ms.__class__ is int):
                raise ValueError("a kept task's items")
            task = new(KeptTask)
            task.unique_id, task.state, task.seq, task.run_seq = \
                unique_id, states[state], seq, run_seq
            task._expires_ms, task._version, task._packed = expires_ms, version, packed
            found.append(task)
    except (KeyError, ValueError, TypeError) as exc:
        raise UnknownRecordKindError("kept task", latest) from exc
    return found
