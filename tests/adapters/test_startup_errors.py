"""A server that cannot start says why in one line on stderr, with the command to run, and exits
non-zero: never a traceback. Through the CLI entry (``engine.cli.main``), and once as a process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudqueue import Engine
from cloudqueue.cli import main
from cloudqueue.engine.core.batch_codec import decode_log_payload
from cloudqueue.engine.core.framing import scan
from cloudqueue.engine.runtime.log_dir import locked
from cloudqueue.engine.runtime.log_file import list_segments

ROOT = Path(__file__).resolve().parents[2]
ENV = {"LEANCLOUD_APP_ID": "srv", "LEANCLOUD_APP_KEY": "srv-app-key",
       "LEANCLOUD_APP_MASTER_KEY": "srv-master-key"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def serve(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(["serve", "--host", "127.0.0.1", *argv])
    return status, capsys.readouterr().err


@pytest.mark.usefixtures("env")
def test_a_port_in_use_names_the_port_and_another_to_use(
        tmp_path: Path, busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    status, err = serve(capsys, "--port", str(busy_port), "--data-dir", str(tmp_path))
    assert (status, err) == (1, (
        f"cloudqueue serve: cannot listen on 127.0.0.1:{busy_port}: another process is using "
        f"port {busy_port}. Stop it (`ss -ltnp 'sport = :{busy_port}'` shows which), or start "
        f"on another port: `cloudqueue serve --port {busy_port + 1}`\n"))


@pytest.mark.usefixtures("env")
def test_a_data_dir_held_by_another_process_says_how_to_find_it(
        tmp_path: Path, unused_tcp_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "srv").mkdir()
    with locked(tmp_path / "srv"):
        status, err = serve(capsys, "--port", str(unused_tcp_port), "--data-dir", str(tmp_path))
    assert (status, err) == (1, (
        f"cloudqueue serve: {tmp_path}/srv (app srv) is in use by another cloudqueue process: "
        f"stop it first (`fuser -v {tmp_path}/srv/LOCK` shows which), or start this server "
        "with another --data-dir\n"))


@pytest.mark.usefixtures("env")
def test_a_data_dir_that_is_not_a_directory_says_so(
        tmp_path: Path, unused_tcp_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "srv").write_text("")
    status, err = serve(capsys, "--port", str(unused_tcp_port), "--data-dir", str(tmp_path))
    assert (status, err) == (1, (
        f"cloudqueue serve: app srv cannot use {tmp_path}/srv: File exists; it must be a "
        f"directory this user may write to (`ls -ld {tmp_path}/srv` shows what it is)\n"))


def damage_middle_of_log(directory: Path) -> None:
    """Flip a bit in the third of six records: damage followed by valid records."""
    segment = list_segments(directory)[0][1]
    data = bytearray(segment.read_bytes())
    scanned = scan(bytes(data))
    offsets = [o for o, p in zip(scanned.offsets, scanned.payloads, strict=True)
               if decode_log_payload(p)]
    data[offsets[2] + 12] ^= 0x20
    segment.write_bytes(bytes(data))


@pytest.mark.usefixtures("env")
async def test_a_damaged_log_names_the_repair_command_for_the_apps_own_directory(
        tmp_path: Path, unused_tcp_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    async with Engine(data_dir=tmp_path / "srv") as queue:
        for i in range(6):
            await queue.enqueue("f", {"i": i}, delay=3_600_000)
    damage_middle_of_log(tmp_path / "srv")
    status, err = await _in_thread(capsys, "--port", str(unused_tcp_port), "--data-dir",
                                   str(tmp_path))
    assert status == 1 and "Traceback" not in err and err.count("\n") == 1
    assert err.startswith(f"cloudqueue serve: the log of app srv in {tmp_path}/srv is damaged "
                          "(segment ")
    assert err.endswith(f"; nothing was changed. Repair it (a backup is kept) with: "
                        f"cloudqueue log repair {tmp_path}/srv\n")


async def _in_thread(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``main`` runs its own event loop: off this test's loop."""
    import asyncio

    return await asyncio.to_thread(serve, capsys, *argv)


@pytest.mark.parametrize(("app_id", "shown"), [("../x", "'../x'"), ("..", "'..'"),
                                                ("a/b", "'a/b'"), ("x" * 65, repr("x" * 65)),
                                                (".hidden", "'.hidden'")])
def test_an_app_id_that_is_not_a_safe_directory_name_is_refused(
        tmp_path: Path, unused_tcp_port: int, capsys: pytest.CaptureFixture[str], app_id: str,
        shown: str) -> None:
    config = tmp_path / "cloudqueue.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[[apps]]\napp_id = "{app_id}"\n'
                      'app_key = "k"\nmaster_key = "m"\n')
    status, err = serve(capsys, "--config", str(config), "--port", str(unused_tcp_port))
    assert (status, err) == (2, (
        f"cloudqueue serve: bad configuration in {config}: apps[0].app_id: app id {shown} is "
        "not allowed; an app id is 1 to 64 letters, digits, '_', '-' or '.', starting with a "
        "letter or digit (it names the app's directory under the data directory)\n"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cloudqueue.toml"]  # nothing made


def test_the_app_id_from_the_environment_is_checked_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in {**ENV, "LEANCLOUD_APP_ID": "../escape"}.items():
        monkeypatch.setenv(name, value)
    status, err = serve(capsys, "--data-dir", str(tmp_path / "data"))
    assert status == 2
    assert err.startswith("cloudqueue serve: bad configuration: LEANCLOUD_APP_ID: app id "
                          "'../escape' is not allowed")
    assert not (tmp_path / "escape").exists()


def test_as_a_process_a_refusal_is_one_line_without_a_traceback(tmp_path: Path,
                                                                busy_port: int) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cloudqueue", "serve", "--port", str(busy_port), "--data-dir",
         str(tmp_path)], env={**os.environ, **ENV, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "cloudqueue serve:" in line] == [
        f"cloudqueue serve: cannot listen on 127.0.0.1:{busy_port}: another process is using "
        f"port {busy_port}. Stop it (`ss -ltnp 'sport = :{busy_port}'` shows which), or start "
        f"on another port: `cloudqueue serve --port {busy_port + 1}`"]
