"""Small things the command line owes a newcomer: ``--version``, ``-v`` on either side of the
subcommand, and a classic five-field cron expression answered with the six-field form."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from cloudqueue import ValidationError
from cloudqueue.cli import build_parser
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
