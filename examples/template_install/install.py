"""The install function: a template installed in short slices, each well inside its timeout.

One call does as much of the work as fits in ``budget_ms`` (default 300 ms; 0: one unit of work a
slice, whatever the machine's speed), reports progress,
and returns ``call.continue_with(checkpoint)``; the queue stores the checkpoint durably and calls
again, as the same attempt, until the function returns the result. Phases, in order:

1. ``fetch``  download the archive with HTTP range requests (256 KiB a request)
2. ``unpack`` extract its members into a scratch folder, a few at a time
3. ``copy``   copy the site files into the storage folder (``storage/<template>/...``)
4. ``import`` load each JSON collection into SQLite, 500 rows a transaction
5. ``cleanup`` drop the scratch folder; the result

Every step is safe to repeat, because a crash (of the host or of the queue) between slices
resumes from the last *stored* checkpoint, and work done after it is done again: the download
is cut back to the checkpoint's length, files are written to a temporary name and renamed, rows
are keyed by ``objectId`` (``INSERT OR REPLACE``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sqlite3
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp

from cloudqueue.adapters.function_host import Call, CloudError, FunctionHost

from .template import COLLECTIONS_PREFIX, FILES_PREFIX

PHASES = ("fetch", "unpack", "copy", "import", "cleanup")
# each phase's share of the whole job, in percent
WEIGHTS = {"fetch": 25, "unpack": 15, "copy": 20, "import": 40, "cleanup": 0}
CHUNK_BYTES = 256 * 1024
ROWS_PER_BATCH = 500
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,40}$")
_TABLE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
_CONTENT_RANGE = re.compile(r"^bytes \d+-\d+/(\d+)$")

Checkpoint = dict[str, Any]


@dataclass
class Installer:
    """Where an install puts things: site files under ``storage``, rows in ``database``,
    scratch under ``work/<uniqueId>``."""

    storage: Path
    database: Path
    work: Path
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def run_slice(self, params: dict[str, Any], checkpoint: Checkpoint, task_id: str,
                        deadline: float) -> tuple[Checkpoint, dict[str, Any] | None]:
        """Do one slice of work, phase after phase, until ``deadline`` (a ``time.monotonic()``
        value); return the next checkpoint, and the result once the install is done."""
        template = _template_name(params)
        scratch = self.work / _safe_dir_name(task_id)
        while True:
            phase = checkpoint["phase"]
            result = None
            if phase == "fetch":
                checkpoint = await self._fetch(params, checkpoint, scratch, deadline)
            elif phase == "unpack":
                checkpoint = await asyncio.to_thread(_unpack, checkpoint, scratch, deadline)
            elif phase == "copy":
                checkpoint = await asyncio.to_thread(_copy, checkpoint, scratch,
                                                     self.storage / template, deadline)
            elif phase == "import":
                checkpoint, result = await asyncio.to_thread(
                    self._import, checkpoint, scratch, deadline)
            elif phase == "cleanup":
                checkpoint, result = await asyncio.to_thread(
                    self._cleanup, checkpoint, scratch, self.storage / template)
            else:
                raise CloudError(f"unknown phase {phase!r} in the checkpoint")
            if result is not None or time.monotonic() >= deadline:
                return checkpoint, result

    async def _fetch(self, params: dict[str, Any], cp: Checkpoint, scratch: Path,
                     deadline: float) -> Checkpoint:
        url = params.get("archive_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise CloudError("params.archive_url must be an http(s) URL of the template archive")
        scratch.mkdir(parents=True, exist_ok=True)
        part = scratch / "archive.zip.part"
        # bytes written after the stored checkpoint (a crash before it was stored) are cut
        at = min(cp["at"], part.stat().st_size if part.exists() else 0)
        size = cp.get("size")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        with part.open("r+b" if part.exists() else "wb") as out:
            out.truncate(at)
            out.seek(at)
            while size is None or at < size:
                headers = {"Range": f"bytes={at}-{at + CHUNK_BYTES - 1}"}
                async with self._session.get(url, headers=headers) as response:
                    data = await response.read()
                    if response.status == 206:
                        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                        if match is None:
                            raise CloudError(f"{url} answered 206 without a Content-Range")
                        size = int(match.group(1))
                    elif response.status == 200 and at == 0:
                        size = len(data)  # a server without ranges: the whole archive at once
                    else:
                        raise CloudError(f"fetching {url} answered HTTP {response.status}")
                out.write(data)
                at += len(data)
                if time.monotonic() >= deadline:
                    break
            out.flush()
            os.fsync(out.fileno())
        if size is not None and at >= size:
            return {"phase": "unpack", "at": 0, "size": size}
        return {"phase": "fetch", "at": at, "size": size}

    def _import(self, cp: Checkpoint, scratch: Path,
                deadline: float) -> tuple[Checkpoint, dict[str, Any] | None]:
        """First each collection is rewritten as JSON lines (one parse, a unit of its own, and
        its row count known); then rows go in ``ROWS_PER_BATCH`` to a transaction."""
        folder = scratch / "unpacked" / COLLECTIONS_PREFIX
        names: list[str] = cp.get("names") or sorted(p.stem for p in folder.glob("*.json"))
        counts: dict[str, int] = dict(cp.get("counts", {}))
        index, row, pos = cp.get("collection", 0), cp.get("row", 0), cp.get("pos", 0)
        with sqlite3.connect(self.database) as db:
            while index < len(names):
                pending = [n for n in names if n not in counts]
                if pending:
                    counts[pending[0]] = _as_lines(folder, pending[0])
                else:
                    name = names[index]
                    db.execute(f"CREATE TABLE IF NOT EXISTS {name} "
                               "(objectId TEXT PRIMARY KEY, data TEXT NOT NULL)")
                    with (folder / f"{name}.ndjson").open("rb") as source:
                        source.seek(pos)  # straight to the next row: no re-reading
                        lines = [line for line in (source.readline()
                                                   for _ in range(ROWS_PER_BATCH)) if line]
                        pos = source.tell()
                    with db:  # one transaction a batch
                        db.executemany(f"INSERT OR REPLACE INTO {name} VALUES (?, ?)",
                                       [(json.loads(line)["objectId"], line.rstrip().decode())
                                        for line in lines])
                    row += len(lines)
                    if row >= counts[name]:
                        index, row, pos = index + 1, 0, 0
                if time.monotonic() >= deadline:
                    break
        if index < len(names):
            return {"phase": "import", "collection": index, "row": row, "pos": pos,
                    "names": names, "counts": counts, "files": cp.get("files", 0)}, None
        return {"phase": "cleanup", "names": names, "files": cp.get("files", 0)}, None

    def _cleanup(self, cp: Checkpoint, scratch: Path,
                 target: Path) -> tuple[Checkpoint, dict[str, Any]]:
        """Drop the scratch folder (in a slice of its own: an import slice run again needs it)
        and read the result off the destinations, so a repeated last slice answers the same."""
        shutil.rmtree(scratch, ignore_errors=True)
        with sqlite3.connect(self.database) as db:
            rows = {n: db.execute(f"SELECT COUNT(*) FROM {n}").fetchone()[0]
                    for n in cp["names"]}
        return cp, {"files": cp["files"], "storage": str(target), "rows": rows}


def _as_lines(folder: Path, name: str) -> int:
    """Rewrite collection ``name`` (a JSON array of objects with an ``objectId``) as JSON lines
    beside it; return its row count."""
    if not _TABLE.match(name):
        raise CloudError(f"collection name {name!r} is not a plain table name")
    rows = json.loads((folder / f"{name}.json").read_text())
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(
            r.get("objectId"), str) for r in rows):
        raise CloudError(f"collection {name!r} must be a JSON array of objects with a string "
                         "objectId")
    text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
    _write_atomically(folder / f"{name}.ndjson", text.encode())
    return len(rows)


def _template_name(params: dict[str, Any]) -> str:
    name = params.get("template")
    if not isinstance(name, str) or not _NAME.match(name):
        raise CloudError("params.template must be a name of lowercase letters, digits, '-' or "
                         "'_' (up to 41 characters)")
    return name


def _safe_dir_name(task_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", task_id)[:64] or "task"


def _inside(root: Path, relative: str) -> Path:
    """``root / relative`` for an archive member name, refusing absolute paths and ``..``."""
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts:
        raise CloudError(f"the archive holds an unsafe path {relative!r}")
    return root.joinpath(*path.parts)


def _write_atomically(target: Path, data: bytes | None = None,
                      copy_of: Path | None = None) -> None:
    """``data`` (or a copy of file ``copy_of``) at ``target``, written to a temporary name and
    renamed: a crash leaves the old file or the new one, never half of one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    if copy_of is not None:
        shutil.copyfile(copy_of, tmp)
    else:
        tmp.write_bytes(data or b"")
    os.replace(tmp, target)


def _unpack(cp: Checkpoint, scratch: Path, deadline: float) -> Checkpoint:
    root = scratch / "unpacked"
    with zipfile.ZipFile(scratch / "archive.zip.part") as archive:
        members = sorted(n for n in archive.namelist() if not n.endswith("/"))
        at = cp["at"]
        while at < len(members):  # at least one member a slice, so every slice gets somewhere
            name = members[at]
            data = archive.read(name)
            _write_atomically(_inside(root, name), data)
            at += 1
            if time.monotonic() >= deadline:
                break
    if at >= len(members):
        return {"phase": "copy", "at": 0, "members": len(members)}
    return {"phase": "unpack", "at": at, "members": len(members)}


def _copy(cp: Checkpoint, scratch: Path, target: Path, deadline: float) -> Checkpoint:
    source = scratch / "unpacked" / FILES_PREFIX
    files = sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file())
    at = cp["at"]
    while at < len(files):
        relative = files[at]
        _write_atomically(_inside(target, relative), copy_of=source / relative)
        at += 1
        if time.monotonic() >= deadline:
            break
    if at >= len(files):
        return {"phase": "import", "collection": 0, "row": 0, "files": len(files)}
    return {"phase": "copy", "at": at, "files": len(files)}


def progress_of(cp: Checkpoint) -> dict[str, Any]:
    """The progress report for a checkpoint: an overall percent, done/total of the current
    phase and a message."""
    phase = cp["phase"]
    before = sum(WEIGHTS[p] for p in PHASES[:PHASES.index(phase)])
    if phase == "fetch":
        done, total = cp["at"], cp.get("size") or 0
        message = f"downloading the archive: {done / 1e6:.1f} of {total / 1e6:.1f} MB"
    elif phase == "unpack":
        done, total = cp["at"], cp.get("members", 0)
        message = f"unpacking: {done} of {total} members"
    elif phase == "copy":
        done, total = cp["at"], cp.get("files", 0)
        message = f"copying files: {done} of {total}"
    elif phase == "cleanup":
        done, total, message = 1, 1, "cleaning up"
    else:
        counts = cp.get("counts", {})
        names = cp.get("names", ())
        finished = names[:cp.get("collection", 0)]
        done = sum(counts.get(n, 0) for n in finished) + cp.get("row", 0)
        total = sum(counts.values()) if len(counts) == len(names) else 0
        current = names[len(finished)] if len(finished) < len(names) else ""
        message = f"importing {current}: {done:,} of {total:,} rows"
    if not total:
        message = {"fetch": "starting the download", "unpack": "opening the archive",
                   "copy": "listing the files", "import": "reading the collections",
                   "cleanup": "cleaning up"}[phase]
    fraction = done / total if total else 0.0
    percent = round(before + WEIGHTS[phase] * min(1.0, fraction), 1)
    return {"percent": percent, "done": min(done, total), "total": total, "message": message,
            "detail": {"phase": phase}}


def define_install(host: FunctionHost, installer: Installer, name: str = "install_template"
                   ) -> None:
    """Register the install function on a function host."""

    @host.define(name)
    async def install_template(params: Any, call: Call) -> Any:
        if not isinstance(params, dict):
            raise CloudError("params must be an object: {template, archive_url, budget_ms}")
        budget_ms = params.get("budget_ms", 300)
        pause_ms = params.get("pause_ms", 0)
        if not isinstance(budget_ms, int) or not (budget_ms == 0 or 10 <= budget_ms <= 1_000):
            raise CloudError("params.budget_ms must be 0 (one unit of work a slice) or a whole "
                             "number from 10 to 1000")
        if not isinstance(pause_ms, int) or not 0 <= pause_ms <= 1_000:
            raise CloudError("params.pause_ms must be a whole number from 0 to 1000")
        if pause_ms:  # the demo's pacing: stands in for slower real work
            await asyncio.sleep(pause_ms / 1000)
        checkpoint = call.checkpoint or {"phase": "fetch", "at": 0}
        # budget 0: a deadline already passed, so the slice does exactly one unit of work (the
        # same slices on any machine: what the tests use)
        deadline = time.monotonic() + budget_ms / 1000 if budget_ms else float("-inf")
        checkpoint, result = await installer.run_slice(params, checkpoint,
                                                       call.unique_id or "local", deadline)
        if result is not None:
            await call.progress(100, done=1, total=1, message="installed",
                                detail={"phase": "done"})
            return {"template": params["template"], **result}
        await call.progress(**progress_of(checkpoint))
        return call.continue_with(checkpoint)
