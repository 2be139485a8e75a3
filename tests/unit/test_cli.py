"""The `failback` command lists its verbs and refuses, loudly, the ones not built yet."""

from __future__ import annotations

import subprocess
import sys

import pytest

from failback import cli

VERBS = ("operator", "process-server", "master-target", "demo")


def test_help_lists_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for verb in VERBS:
        assert verb in out


@pytest.mark.parametrize("verb", [v.name for v in cli.VERBS if v.pending])
def test_unbuilt_verb_says_so_and_fails(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([verb]) == cli.EXIT_NOT_BUILT
    err = capsys.readouterr().err
    assert f"failback {verb}: not available yet" in err


def test_unknown_verb_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["fail-forward"])
    assert exit_.value.code == 2
    assert "invalid choice: 'fail-forward'" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    """The `failback` entry point of pyproject.toml resolves to this CLI."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from failback.cli import main; sys.exit(main())",
            "--help",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    assert all(verb in proc.stdout for verb in VERBS)
