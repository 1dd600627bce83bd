"""Small things the command line owes a newcomer: ``--version``, ``-v`` on either side of the
subcommand, a classic five-field cron expression answered with the six-field form; and
``--host-concurrency``, ``--log-format``."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

from cloudqueue import ValidationError
from cloudqueue.cli import _serve_config, build_parser
from cloudqueue.engine.core.cron import parse_cron


def test_version_names_the_installed_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ended:
        build_parser().parse_args(["--version"])
    assert ended.value.code == 0
    assert capsys.readouterr().out.strip() == f"cloudqueue {version('cloudqueue')}"


@pytest.mark.parametrize(("argv", "verbose"), [
    (["-v", "serve"], True), (["serve", "-v"], True), (["serve"], False),
    (["log", "verify", "data", "--verbose"], True), (["demo", "-v"], True),
])
def test_verbose_goes_before_or_after_the_subcommand(argv: list[str], verbose: bool) -> None:
    assert build_parser().parse_args(argv).verbose is verbose


@pytest.mark.parametrize(("expr", "hint"), [
    ("*/5 * * * *", "for the classic '*/5 * * * *' write '0 */5 * * * *'"),
    ("30 2 * * 1", "write '0 30 2 * * 1' (and days of week count 1-7 from Sunday here"),
])
def test_a_five_field_cron_suggests_the_six_field_form(expr: str, hint: str) -> None:
    with pytest.raises(ValidationError, match="expected 6 fields") as refused:
        parse_cron(expr)
    assert hint in str(refused.value)
    parse_cron("0 " + expr)  # the suggestion parses


def test_other_field_counts_get_no_suggestion() -> None:
    with pytest.raises(ValidationError) as refused:
        parse_cron("0 0 0 * * ? 2030")
    assert "got 7" in str(refused.value) and "classic" not in str(refused.value)


def test_host_concurrency_on_the_command_line(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("LEANCLOUD_APP_ID", "app"), ("LEANCLOUD_APP_KEY", "k"),
                        ("LEANCLOUD_APP_MASTER_KEY", "m")):
        monkeypatch.setenv(name, value)
    serve = ["serve", "--data-dir", str(tmp_path), "--concurrency", "64"]
    (fixed,) = _serve_config(build_parser().parse_args(serve)).apps
    (adaptive,) = _serve_config(build_parser().parse_args(
        [*serve, "--host-concurrency", "adaptive"])).apps
    assert (fixed.host_concurrency, adaptive.host_concurrency) == ("fixed", "adaptive")
    assert adaptive.concurrency == 64  # the ceiling
    config = tmp_path / "cloudqueue.toml"
    config.write_text("[[apps]]\napp_id = 'a'\napp_key = 'k'\nmaster_key = 'm'\n"
                      "[[apps]]\napp_id = 'b'\napp_key = 'k'\nmaster_key = 'm'\n"
                      "host_concurrency = 'adaptive'\n")
    given = ["serve", "--config", str(config)]
    assert [a.host_concurrency for a in _serve_config(build_parser().parse_args(given)).apps
            ] == ["fixed", "adaptive"]
    assert [a.host_concurrency for a in _serve_config(build_parser().parse_args(
        [*given, "--host-concurrency", "fixed"])).apps] == ["fixed", "fixed"]  # every app's
    with pytest.raises(SystemExit):
        build_parser().parse_args([*serve, "--host-concurrency", "auto"])


def test_log_format_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in (("LEANCLOUD_APP_ID", "app"), ("LEANCLOUD_APP_KEY", "k"),
                        ("LEANCLOUD_APP_MASTER_KEY", "m")):
        monkeypatch.setenv(name, value)
    serve = ["serve", "--data-dir", str(tmp_path)]
    assert _serve_config(build_parser().parse_args(serve)).log_format == "text"
    assert _serve_config(build_parser().parse_args(
        [*serve, "--log-format", "json"])).log_format == "json"
    config = tmp_path / "cloudqueue.toml"
    config.write_text("log_format = 'json'\n[[apps]]\napp_id = 'a'\napp_key = 'k'\n"
                      "master_key = 'm'\n")
    given = ["serve", "--config", str(config)]
    assert _serve_config(build_parser().parse_args(given)).log_format == "json"
    assert _serve_config(build_parser().parse_args(
        [*given, "--log-format", "text"])).log_format == "text"  # the flag wins
    with pytest.raises(SystemExit):
        build_parser().parse_args([*serve, "--log-format", "JSON"])
    assert "got 'JSON' (did you mean 'json'?)" in capsys.readouterr().err
