"""`python -m testbed up | env | down`: what `make demo` runs, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from testbed import build
from testbed.procs import alive

HACK = build.REPO / "hack"


def run_testbed_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "testbed", "--root", str(root), *args],
        env={**os.environ, "PYTHONPATH": str(HACK)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_up_env_down(tmp_path: Path) -> None:
    build.require()  # fails with the fix if the binaries are missing
    root = tmp_path / "run"

    up = run_testbed_cli(root, "up", "--with-operator")
    try:
        assert up.returncode == 0, up.stderr
        for component in ("Kubernetes", "vCenter", "Azure", "Helm", "failback operator"):
            assert component in up.stdout
        # The operator runs and reports the samples (make demo shows them).
        assert "protectedvm.failback.io/web-01" in up.stdout
        state = json.loads((root / "state.json").read_text())
        pids = [
            state["kube"]["apiserver_pid"],
            state["kube"]["etcd_pid"],
            state["vcenter"]["pid"],
            state["azure"]["pid"],
            state["operator"]["pid"],
        ]
        assert all(alive(pid) for pid in pids)

        again = run_testbed_cli(root, "up")
        assert again.returncode == 1
        assert "already running" in again.stderr

        env = run_testbed_cli(root, "env")
        assert env.returncode == 0, env.stderr
        shell = subprocess.run(
            ["bash", "-c", f"{env.stdout}\nkubectl get ns default -o name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert shell.returncode == 0, shell.stderr
        assert shell.stdout.strip() == "namespace/default"
        # Secrets are read from files when the shell evaluates the exports, never printed.
        assert state["vcenter"]["password"] not in up.stdout + env.stdout
    finally:
        down = run_testbed_cli(root, "down")
    assert down.returncode == 0, down.stderr
    assert not any(alive(pid) for pid in pids)
    assert not root.exists()

    gone = run_testbed_cli(root, "env")
    assert gone.returncode == 1
    assert "no live test bed" in gone.stderr
