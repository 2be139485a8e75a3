"""A missing test bed component is an error that says how to get it, never a skip."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import build
from testbed.procs import TestbedError


def test_missing_binaries_name_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FAILBACK_TESTBED_CACHE", str(tmp_path))
    with pytest.raises(TestbedError) as error:
        build.require()
    message = str(error.value)
    assert "kube-apiserver" in message
    assert "vcsim" in message
    assert "make testbed" in message


def test_missing_go_toolchain_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(TestbedError, match="the Go toolchain is not on PATH; install Go"):
        build.go_toolchain()
