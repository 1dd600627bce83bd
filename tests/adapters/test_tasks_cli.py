"""`cloudqueue tasks` and `cloudqueue apps` against a real `cloudqueue serve` process (a
development app serving examples/tasks.py in-process, its credentials and operator token in
DATA_DIR/dev-credentials.json): every operator action, the progress bar of `tasks wait`, the
exit codes, and the actions replayed after the server restarts."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloudqueue import QueueUnavailableError, TaskState, tasks_cli
from cloudqueue.engine.core.task import ABSENT, TaskInfo
from tests.adapters.test_cron_cli import ROOT, Ran, clean_env, free_port, wait_ready

_OURS = ("CLOUDQUEUE_URL", "LEANCLOUD_APP_ID", "LEANCLOUD_APP_KEY", "LEANCLOUD_APP_MASTER_KEY",
         "LEANCLOUD_APP_HOOK_KEY", "CLOUDQUEUE_ADMIN_TOKEN")


def env_of(**extra: str) -> dict[str, str]:
    return {k: v for k, v in clean_env(**extra).items()
            if k != "CLOUDQUEUE_ADMIN_TOKEN" or "CLOUDQUEUE_ADMIN_TOKEN" in extra}


@dataclass
class Server:
    """A `cloudqueue serve` process on ``data_dir`` (restartable: same port, same log)."""

    data_dir: Path
    port: int
    process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def credentials(self) -> dict[str, str]:
        stored: dict[str, str] = json.loads((self.data_dir / "dev-credentials.json").read_text())
        return stored

    @property
    def env(self) -> dict[str, str]:
        """The CLI's environment: the URL only; credentials from ``--data-dir``'s file."""
        return env_of(CLOUDQUEUE_URL=self.url)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cloudqueue", "serve", "--port", str(self.port), "--data-dir",
             str(self.data_dir), "--functions", "examples.tasks"],
            env=env_of(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_ready(self.url, self.process)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
        self.process = None

    def cli(self, *args: str, env: dict[str, str] | None = None,
            process: bool = False) -> Ran:
        """``cloudqueue ARGS`` with only ``env`` (default: the URL; credentials from the dev
        file): in this process (``tasks_cli.main``), or in a process of its own."""
        argv = [*args, *([] if "--data-dir" in args else ["--data-dir", str(self.data_dir)])]
        env = env or self.env
        if process:
            done = subprocess.run([sys.executable, "-m", "cloudqueue", *argv], env=env,
                                  cwd=ROOT, capture_output=True, text=True, timeout=60)
            return Ran(done.returncode, done.stdout, done.stderr)
        out, err, saved = io.StringIO(), io.StringIO(), dict(os.environ)
        try:
            os.environ.clear()
            os.environ.update(env)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = tasks_cli.main(argv)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return Ran(code, out.getvalue(), err.getvalue())

    def ok(self, *args: str) -> str:
        ran = self.cli(*args)
        assert ran.returncode == 0, ran
        return ran.stdout

    def answer(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("serve"), free_port())
    running.start()
    try:
        yield running
    finally:
        running.stop()


# examples/tasks.py's count-slowly, told to count to a number it cannot read: a run that fails
FAILS = ("count-slowly", "--params", '{"to": "many"}')


def own(request: pytest.FixtureRequest, name: str) -> str:
    """A uniqueId of this test's own (the server is shared)."""
    return f"{request.node.name[-20:]}-{name}"


# ---------------------------------------------------------------------------- tasks


def test_enqueue_wait_draws_the_progress_and_exits_0_on_success(server: Server,
                                                               request: pytest.FixtureRequest
                                                               ) -> None:
    uid = own(request, "count")
    assert server.ok("tasks", "enqueue", "count-slowly", "--params", '{"to": 5}',
                     "--unique-id", uid, "--attempts", "0", "--delay", "3600000") == f"{uid}\n"
    # `tasks wait` in a process of its own, following the task before it runs
    waiting = subprocess.Popen([sys.executable, "-m", "cloudqueue", "tasks", "wait", uid,
                                "--data-dir", str(server.data_dir)], env=server.env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert waiting.stderr is not None
    first = waiting.stderr.readline()  # not a terminal: a line per change
    assert first == "[..............................]   0% queued\n"
    server.ok("tasks", "run-now", uid)
    out, rest = waiting.communicate(timeout=60)
    bars = [first.rstrip(), *rest.splitlines()]
    assert waiting.returncode == 0, (out, bars)
    assert bars[-1] == "[##############################] 100% success"
    assert any(line.endswith("0% running") and " 0%" not in line and "100%" not in line
               for line in bars), bars  # 20%, 40%, ... as the function reports
    assert "state:      success" in out
    assert 'result:     {"result": {"counted": 5}}' in out
    shown = server.answer("tasks", "show", uid)
    assert (shown["state"], shown["result"], shown["progress"]["done"]) == (
        "success", {"result": {"counted": 5}}, 5)
    listed = server.answer("tasks", "list", "--state", "success", "--limit", "1000")
    assert uid in [t["uniqueId"] for t in listed["results"]]
    table = server.ok("tasks", "list", "--limit", "1")
    assert table.splitlines()[0].split() == ["UNIQUE", "ID", "FUNCTION", "STATE", "RUNS",
                                             "CREATED", "(UTC)", "FINISHED", "(UTC)"]
    assert table.splitlines()[-1].startswith("1 of ")


def test_wait_exits_1_for_a_failed_task_and_4_when_its_timeout_passes(
        server: Server, request: pytest.FixtureRequest) -> None:
    failing = own(request, "failing")
    server.ok("tasks", "enqueue", *FAILS, "--unique-id", failing, "--attempts", "0")
    waited = server.cli("tasks", "wait", failing, "--quiet", "--json", process=True)
    assert waited.returncode == 1
    assert json.loads(waited.stdout)["state"] == "failed"
    assert waited.stderr == (f"cloudqueue tasks wait: task '{failing}' ended failed: "
                             "ValueError: invalid literal for int() with base 10: 'many'\n")
    later = own(request, "later")
    server.ok("tasks", "enqueue", "hello", "--unique-id", later, "--delay", "3600000")
    timed_out = server.cli("tasks", "wait", later, "--timeout", "300", process=True)
    assert timed_out.returncode == 4
    assert timed_out.stderr.splitlines()[-1] == (
        f"cloudqueue tasks wait: task '{later}' was not final within 300 ms")
    unknown = server.cli("tasks", "wait", own(request, "nobody"))
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr.endswith("not found\n") and len(unknown.stderr.splitlines()) == 1


def test_retry_run_now_and_cancel_one_task(server: Server,
                                           request: pytest.FixtureRequest) -> None:
    broken = own(request, "broken")
    server.ok("tasks", "enqueue", *FAILS, "--unique-id", broken, "--attempts", "0")
    assert server.cli("tasks", "wait", broken, "--quiet").returncode == 1
    retried = server.answer("tasks", "retry", broken)
    assert (retried["state"], retried["attempt"]) == ("queued", 0)
    assert server.cli("tasks", "wait", broken, "--quiet").returncode == 1
    assert server.answer("tasks", "show", broken)["attempt"] == 1

    later = own(request, "later")
    server.ok("tasks", "enqueue", "hello", "--params", '{"name": "now"}', "--unique-id", later,
              "--delay", "3600000")
    assert "state:     queued" in server.ok("tasks", "run-now", later)
    assert server.cli("tasks", "wait", later, "--quiet").returncode == 0
    refused = server.cli("tasks", "run-now", later)
    assert (refused.returncode, refused.stderr) == (1, f"cloudqueue tasks run-now: Task "
                                                       f"'{later}' is success: cannot run it "
                                                       "now (it is not waiting for a delay or "
                                                       "a retry)\n")
    again = server.cli("tasks", "retry", later)
    assert again.returncode == 1 and "is success: cannot retry it" in again.stderr

    waiting = own(request, "waiting")
    server.ok("tasks", "enqueue", "hello", "--unique-id", waiting, "--delay", "3600000")
    assert server.answer("tasks", "cancel", waiting)["state"] == "cancelled"
    twice = server.cli("tasks", "cancel", waiting)
    assert twice.returncode == 1 and "is cancelled: cannot cancel it" in twice.stderr
    entries = server.answer("apps", "audit", "--limit", "200")["results"]
    mine = [(e["action"], e["by"], e["via"], e["uniqueId"]) for e in entries
            if e.get("uniqueId") in (broken, later, waiting)]
    assert mine == [("cancel", "operator", "cli", waiting), ("run_now", "operator", "cli", later),
                    ("retry", "operator", "cli", broken)]


def test_bulk_cancel_retry_and_purge_count_first(server: Server,
                                                 request: pytest.FixtureRequest) -> None:
    uids = [own(request, f"b{i}") for i in range(3)]
    for uid in uids:
        server.ok("tasks", "enqueue", *FAILS, "--unique-id", uid, "--delay", "3600000",
                  "--attempts", "0")
    # this test's tasks: those of its function created since its first (the server is shared)
    since = server.answer("tasks", "show", uids[0])["createdAt"]
    mine = ("--function", "count-slowly", "--created-from", since)
    assert server.ok("tasks", "cancel", *mine, "--dry-run") == \
        "would cancel 3 of 3 matching tasks\n"
    assert server.ok("tasks", "cancel", *mine, "--limit", "2") == \
        "cancelled 2 of 3 matching tasks (1 more match: run it again)\n"
    assert [server.answer("tasks", "show", uid)["state"] for uid in uids] == [
        "cancelled", "cancelled", "queued"]  # the oldest first
    assert server.answer("tasks", "cancel", *mine) == {"count": 1, "matched": 1,
                                                       "dryRun": False}
    assert server.ok("tasks", "retry", *mine, "--state", "cancelled") == \
        "retried 3 of 3 matching tasks\n"
    for uid in uids:
        assert server.cli("tasks", "wait", uid, "--quiet").returncode == 1
    assert server.answer("tasks", "purge", *mine, "--state", "failed") == {
        "count": 3, "matched": 3, "dryRun": False}
    gone = server.cli("tasks", "show", uids[0])
    assert gone.returncode == 1 and "not found" in gone.stderr
    actions = [(e["action"], e["count"], e["filter"]) for e in
               server.answer("apps", "audit", "--limit", "4")["results"]]
    assert [(action, count) for action, count, _ in actions] == [
        ("purge", 3), ("retry", 3), ("cancel", 1), ("cancel", 2)]
    assert actions[1][2] == {"state": ["cancelled"], "function": "count-slowly",
                             "createdFrom": since}


# ---------------------------------------------------------------------------- apps, restart


def test_list_pages_through_a_filter_with_the_cursor(server: Server,
                                                    request: pytest.FixtureRequest) -> None:
    uids = [own(request, f"l{i}") for i in range(3)]
    for uid in uids:
        server.ok("tasks", "enqueue", *FAILS, "--unique-id", uid, "--delay", "3600000")
    since = server.answer("tasks", "show", uids[0])["createdAt"]
    mine = ("--function", "count-slowly", "--created-from", since)
    first = server.answer("tasks", "list", *mine, "--limit", "2")
    assert [t["uniqueId"] for t in first["results"]] == [uids[2], uids[1]]
    assert "count" not in first  # a function in the filter: not counted
    table = server.ok("tasks", "list", *mine, "--limit", "2")
    assert table.endswith(f"2 tasks; the next page: --cursor {first['next']}\n")
    rest = server.answer("tasks", "list", *mine, "--limit", "2", "--cursor", first["next"])
    assert ([t["uniqueId"] for t in rest["results"]], "next" in rest) == ([uids[0]], False)
    assert server.ok("tasks", "list", *mine, "--cursor", first["next"]).endswith(
        "\n1 task\n")
    server.ok("tasks", "cancel", *mine)


def test_pause_and_every_action_survive_a_restart(tmp_path: Path) -> None:
    """Pause, run now, retry, bulk cancel and purge through the CLI; restart the server: the
    paused state, the tasks and the audit list are what they were; resume runs the tasks."""
    server = Server(tmp_path, free_port())
    server.start()
    try:
        assert server.ok("apps", "status") == "dispatch running\n"
        paused = server.answer("apps", "pause")
        assert paused["paused"] is True
        assert server.ok("apps", "status") == f"dispatch paused since {paused['pausedAt']}\n"
        server.ok("tasks", "enqueue", "hello", "--unique-id", "held")
        assert server.answer("tasks", "show", "held")["appPaused"] is True
        server.ok("tasks", "enqueue", "hello", "--unique-id", "delayed", "--delay", "3600000")
        server.ok("tasks", "run-now", "delayed")
        server.ok("tasks", "enqueue", "hello", "--unique-id", "dropped", "--delay", "3600000")
        server.ok("tasks", "cancel", "--function", "hello", "--state", "queued",
                  "--created-from", "0", "--limit", "1")  # the oldest: held
        server.ok("tasks", "retry", "held")
        server.ok("tasks", "cancel", "dropped")
        server.ok("tasks", "purge", "--state", "cancelled", "--all")
        audit = server.answer("apps", "audit")
        assert [e["action"] for e in audit["results"]] == [
            "purge", "cancel", "retry", "cancel", "run_now", "pause"]
        server.stop()
        server.start()  # replays the log
        assert server.answer("apps", "status") == paused
        assert server.answer("apps", "audit") == audit
        assert server.answer("tasks", "show", "held")["state"] == "queued"
        assert server.cli("tasks", "show", "dropped").returncode == 1  # purged
        assert server.cli("tasks", "wait", "delayed", "--timeout", "300").returncode == 4
        assert server.cli("apps", "resume", process=True).stdout == "dispatch running\n"
        for uid in ("held", "delayed"):  # run now held across the restart: no hour's wait
            assert server.cli("tasks", "wait", uid, "--quiet").returncode == 0
    finally:
        server.stop()


# ---------------------------------------------------------------------------- credentials


def test_credentials_from_the_environment_or_the_operator_token(
        server: Server, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    keys = server.credentials
    as_master = env_of(CLOUDQUEUE_URL=server.url, LEANCLOUD_APP_ID=keys["app_id"],
                       LEANCLOUD_APP_MASTER_KEY=keys["master_key"])
    as_operator = env_of(CLOUDQUEUE_URL=server.url, LEANCLOUD_APP_ID=keys["app_id"],
                         CLOUDQUEUE_ADMIN_TOKEN=keys["admin_token"])
    elsewhere = str(tmp_path)  # no dev file there: only the environment speaks
    for env, by in ((as_master, "master"), (as_operator, "operator")):
        uid = own(request, by)
        server.ok("tasks", "enqueue", "hello", "--unique-id", uid, "--delay", "3600000")
        ran = server.cli("tasks", "cancel", uid, "--data-dir", elsewhere, env=env)
        assert ran.returncode == 0, ran
        entries = json.loads(server.cli("apps", "audit", "--limit", "1", "--json", "--data-dir",
                                        elsewhere, env=env).stdout)["results"]
        assert [(e["action"], e["by"], e["via"], e["uniqueId"]) for e in entries] == [
            ("cancel", by, "cli", uid)]
    wrong = env_of(CLOUDQUEUE_URL=server.url, LEANCLOUD_APP_ID=keys["app_id"],
                   CLOUDQUEUE_ADMIN_TOKEN="wrong-token-31415926535")
    refused = server.cli("apps", "status", "--data-dir", elsewhere, env=wrong)
    assert (refused.returncode, refused.stderr) == (1, "cloudqueue apps status: Unauthorized.\n")
    assert "wrong-token" not in refused.stderr + refused.stdout
    nothing = server.cli("apps", "status", "--data-dir", elsewhere,
                         env=env_of(CLOUDQUEUE_URL=server.url))
    assert nothing.returncode == 2 and "no credentials" in nothing.stderr


def test_an_unreachable_server_exits_3(tmp_path: Path) -> None:
    ran = subprocess.run([sys.executable, "-m", "cloudqueue", "tasks", "list", "--url",
                          f"http://127.0.0.1:{free_port()}", "--app-id", "a", "--master-key",
                          "secret-key-2718"], env=env_of(), cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert ran.returncode == 3 and "cannot reach the queue" in ran.stderr
    assert len(ran.stderr.splitlines()) == 1 and "secret-key-2718" not in ran.stderr


@pytest.fixture
def inproc(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
           tmp_path: Path) -> Callable[..., Ran]:
    """``tasks_cli.main(argv)`` in this process, with no credentials in the environment."""
    monkeypatch.chdir(tmp_path)
    for var in _OURS:
        monkeypatch.delenv(var, raising=False)

    def run(*args: str) -> Ran:
        code = tasks_cli.main(list(args))
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


@pytest.mark.parametrize("args", [
    ["tasks"],
    ["tasks", "frobnicate"],
    ["tasks", "show"],
    ["tasks", "list", "--limit", "0"],
    ["tasks", "list", "--state", "queued", "--status", "queued"],
    ["tasks", "enqueue"],
    ["tasks", "enqueue", "f", "--params", "{nope"],
    ["tasks", "enqueue", "f", "--delay", "soon"],
    ["tasks", "enqueue", "f", "--attempts", "-1", "--app-id", "a", "--master-key", "k"],
    ["tasks", "cancel", "--app-id", "a", "--master-key", "k"],
    ["tasks", "cancel", "x", "--all", "--app-id", "a", "--master-key", "k"],
    ["tasks", "purge", "--app-id", "a", "--master-key", "k"],
    ["tasks", "purge", "x"],
    ["tasks", "retry", "--state", "queued", "--app-id", "a", "--master-key", "k"],
    ["tasks", "cancel", "--created-from", "2024-01-01T00:00:00", "--all"],
    ["tasks", "cancel", "--all", "--limit", "10001"],
    ["tasks", "wait", "x", "--timeout", "0"],
    ["apps", "audit", "--limit", "201"],
    ["apps", "pause"],  # no credentials
])
def test_usage_errors_exit_2_with_one_line(inproc: Callable[..., Ran], args: list[str]) -> None:
    ran = inproc(*args)
    assert ran.returncode == 2 and ran.stdout == ""
    assert ran.stderr.strip() and "Traceback" not in ran.stderr


# ---------------------------------------------------------------------------- the progress bar


def info(state: TaskState, progress: dict[str, Any] | None = None, **more: Any) -> TaskInfo:
    fields: dict[str, Any] = {"unique_id": "t", "state": state, "function": "f", "attempt": 1,
                              "max_runs": 1, "created_ms": 0, "started_ms": None,
                              "finished_ms": None, "status_code": None, "result": ABSENT,
                              "error": None, "retry_at_ms": None, "expires_ms": None,
                              "progress": progress, **more}
    return TaskInfo(**fields)


@pytest.mark.parametrize(("shown", "line"), [
    (info(TaskState.QUEUED), "[..........]   0% queued"),
    (info(TaskState.QUEUED, app_paused=True), "[..........]   0% queued (dispatch paused)"),
    (info(TaskState.RUNNING, {"done": 1, "total": 4}), "[##........]  25% running"),
    (info(TaskState.RUNNING, {"percent": 62.5, "message": "copying"}, attempt=2, max_runs=3),
     "[######....]  62% copying (attempt 2/3)"),
    (info(TaskState.RETRY_WAIT, {"percent": 40}, max_runs=2), "[####......]  40% retry wait "
                                                              "(attempt 1/2)"),
    (info(TaskState.FAILED, {"percent": 40}, error="boom"), "[####......]  40% failed: boom"),
    (info(TaskState.SUCCESS), "[##########] 100% success"),
])
def test_a_progress_line(shown: TaskInfo, line: str) -> None:
    assert tasks_cli.render_progress(shown, width=10) == line


class Updates:
    """A stand-in for ``QueueClient.watch``: the given updates, then the end of the stream."""

    def __init__(self, updates: list[TaskInfo]) -> None:
        self.updates = updates

    def watch(self, unique_id: str) -> AsyncIterator[tuple[str, TaskInfo]]:
        async def stream() -> AsyncIterator[tuple[str, TaskInfo]]:
            for update in self.updates:
                yield "update", update
        return stream()


async def test_follow_draws_a_line_per_change_or_one_line_in_place() -> None:
    updates = [info(TaskState.RUNNING, {"percent": 10}), info(TaskState.RUNNING, {"percent": 10}),
               info(TaskState.RUNNING, {"percent": 60}), info(TaskState.SUCCESS)]
    piped = io.StringIO()
    final = await tasks_cli.follow(Updates(updates), "t", piped, tty=False)  # type: ignore[arg-type]
    assert final.state is TaskState.SUCCESS
    assert piped.getvalue().splitlines() == [
        "[###...........................]  10% running",
        "[##################............]  60% running",
        "[##############################] 100% success"]
    terminal = io.StringIO()
    await tasks_cli.follow(Updates(updates), "t", terminal, tty=True)  # type: ignore[arg-type]
    assert terminal.getvalue().count("\r") == 4 and terminal.getvalue().endswith("success\n")
    with pytest.raises(QueueUnavailableError, match="ended before the task finished"):
        await tasks_cli.follow(Updates(updates[:2]), "t", None)  # type: ignore[arg-type]
