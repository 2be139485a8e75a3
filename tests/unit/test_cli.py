"""The `failback` command lists its verbs and refuses, loudly, the ones not built yet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    """The `failback` entry point of pyproject.toml is installed next to the interpreter."""
    script = Path(sys.executable).parent / "failback"
    assert script.is_file(), f"{script} is missing: install the project with `make venv`"
    helped = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert helped.returncode == 0
    assert all(verb in helped.stdout for verb in VERBS)
    refused = subprocess.run([script, "operator"], capture_output=True, text=True, check=False)
    assert refused.returncode == cli.EXIT_NOT_BUILT
    assert "not available yet" in refused.stderr
