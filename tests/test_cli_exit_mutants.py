"""The CLI's exit codes and one-line errors, in process (``edgefair.cli.main`` with its argv):
0 pass, 1 fail, 2 bad usage or input (every EdgefairError, every OS error on a file), 3
inconclusive, 130 interrupted; anything else is a bug and keeps its traceback.

Real commands are run where one reaches the branch cheaply; for the branches no cheap
command reaches (an interrupt, an OS error without a file name), a probe command that
raises exactly that is registered on the real app for the test and removed after it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import pytest
import typer

import edgefair
from edgefair import cli
from edgefair.errors import EdgefairError, PrivacyBudgetError, StoreError
from edgefair.verification import api
from edgefair.verification.gate import GateResult
from edgefair.verification.policy import DEFAULT_POLICY


def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["edgefair", *argv])
    with pytest.raises(SystemExit) as info:
        cli.main()
    out, err = capsys.readouterr()
    code = info.value.code
    assert isinstance(code, int), code  # always a number, never None or a message
    return code, out, err


@pytest.fixture
def probe() -> Iterator[Callable[[Callable[[], None]], None]]:
    """Register ``fn`` as the command ``probe`` of the real app for one test."""
    added: list[object] = []

    def register(fn: Callable[[], None]) -> None:
        def probe_command() -> None:
            fn()

        cli.app.command(name="probe")(probe_command)
        added.append(cli.app.registered_commands[-1])

    yield register
    for info in added:
        cli.app.registered_commands.remove(info)  # type: ignore[arg-type]


def test_version_exits_0(capsys, monkeypatch):
    assert run(capsys, monkeypatch, "--version") == (0, f"edgefair {edgefair.__version__}\n", "")


def test_usage_errors_exit_2_with_one_line(capsys, monkeypatch):
    code, out, err = run(capsys, monkeypatch, "no-such-command")
    assert (code, out, err) == (2, "", "edgefair: error: No such command 'no-such-command'. (see edgefair --help)\n")
    code, _, err = run(capsys, monkeypatch, "counters", "show")
    assert (code, err) == (2, "edgefair: error: Missing argument 'source'. (see edgefair --help)\n")
    code, _, err = run(capsys, monkeypatch, "counters", "show", "--no-such-option", "x")
    assert code == 2 and err.startswith("edgefair: error: No such option: --no-such-option") and err.count("\n") == 1


def test_no_arguments_show_the_help_without_an_empty_error(capsys, monkeypatch):
    code, out, err = run(capsys, monkeypatch)
    assert code == 2 and "Usage" in out and "counters" in out
    assert "edgefair: error:  " not in err and "error" not in err


def test_library_errors_exit_2_on_one_line(capsys, monkeypatch, tmp_path):
    where = tmp_path / "two\nlines  here.db"
    code, out, err = run(capsys, monkeypatch, "counters", "show", str(where))
    assert (code, out) == (2, "")
    assert err == f"edgefair: error: {tmp_path}/two lines here.db: no such counters store\n"


@pytest.mark.parametrize("error", [StoreError, PrivacyBudgetError])  # a subclass of each level
def test_every_edgefair_error_exits_2(capsys, monkeypatch, probe, error):
    assert issubclass(error, EdgefairError)

    def fail() -> None:
        raise error("first line\n  second\tline ")

    probe(fail)
    assert run(capsys, monkeypatch, "probe") == (2, "", "edgefair: error: first line second line\n")


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            FileNotFoundError(2, "No such file or directory", "/data/absent.csv"),
            "/data/absent.csv: No such file or directory",
        ),
        (OSError(28, "No space left on device"), "No space left on device"),
        (OSError("plain message"), "plain message"),
    ],
)
def test_os_errors_exit_2_naming_the_file(capsys, monkeypatch, probe, error, message):
    def fail() -> None:
        raise error

    probe(fail)
    assert run(capsys, monkeypatch, "probe") == (2, "", f"edgefair: error: {message}\n")


def test_a_real_os_error_names_its_file(capsys, monkeypatch, probe, tmp_path):
    missing = tmp_path / "absent.csv"
    probe(lambda: missing.open().close())
    assert run(capsys, monkeypatch, "probe") == (2, "", f"edgefair: error: {missing}: No such file or directory\n")


@pytest.mark.parametrize(("code", "expected"), [(1, 1), (3, 3)])
def test_a_command_s_exit_code_is_kept(capsys, monkeypatch, probe, code, expected):
    def finish() -> None:
        raise typer.Exit(code)

    probe(finish)
    assert run(capsys, monkeypatch, "probe")[0] == expected


def test_a_command_that_returns_exits_0(capsys, monkeypatch, probe):
    probe(lambda: None)
    assert run(capsys, monkeypatch, "probe") == (0, "", "")


@pytest.mark.parametrize(("raised", "stderr"), [(KeyboardInterrupt, ""), (typer.Abort, "edgefair: aborted\n")])
def test_interrupts_exit_130(capsys, monkeypatch, probe, raised, stderr):
    def interrupt() -> None:
        raise raised()

    probe(interrupt)
    assert run(capsys, monkeypatch, "probe") == (130, "", stderr)


def test_a_bug_keeps_its_traceback(capsys, monkeypatch, probe):
    def bug() -> None:
        raise ZeroDivisionError("a real bug")

    probe(bug)
    monkeypatch.setattr(sys, "argv", ["edgefair", "probe"])
    with pytest.raises(ZeroDivisionError, match="a real bug"):
        cli.main()


def test_is_usage_error_recognises_click_exceptions_only():
    import click

    assert cli._is_usage_error(click.UsageError("x"))
    assert cli._is_usage_error(click.BadParameter("x"))
    assert cli._is_usage_error(click.ClickException("x"))
    assert not cli._is_usage_error(ValueError("x"))
    assert not cli._is_usage_error(click.exceptions.Exit(1))  # not a ClickException


def report(verdict: str) -> api.VerifyReport:
    return api.VerifyReport(None, 0, GateResult((), verdict, 0.95), DEFAULT_POLICY, "")  # type: ignore[arg-type]


def test_verdicts_map_to_exit_codes():
    assert api.EXIT_CODES == {"pass": 0, "fail": 1, "inconclusive": 3}
    assert [report(v).exit_code for v in ("pass", "fail", "inconclusive")] == [0, 1, 3]
    both = api.CompareReport((report("pass"), report("inconclusive")))
    assert (both.verdict, both.exit_code, both.passed) == ("inconclusive", 3, False)
    worst = api.CompareReport((report("inconclusive"), report("fail"), report("pass")))
    assert (worst.verdict, worst.exit_code) == ("fail", 1)
    good = api.CompareReport((report("pass"), report("pass")))
    assert (good.verdict, good.exit_code, good.passed) == ("pass", 0, True)
