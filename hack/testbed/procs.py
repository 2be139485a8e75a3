"""Processes and ports of the test bed: start, wait for, stop; nothing left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class TestbedError(RuntimeError):
    """A component of the test bed could not be built, started or reached."""

    __test__ = False  # a name pytest would otherwise try to collect


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def spawn(
    argv: Sequence[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a detached process (own session) whose output goes to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(pid: int, *, grace: float = 10.0) -> None:
    """SIGTERM the process group of ``pid``, then SIGKILL whatever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done == pid:
                    return
            if not alive(pid):
                return
            time.sleep(0.05)


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    log: Path,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 120.0,
) -> None:
    """Poll ``ready`` until it is true.

    Fails with the log's tail if the process dies or time runs out.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise TestbedError(
                f"{what} exited with status {proc.returncode} while starting; "
                f"last lines of {log}:\n{log_tail(log)}"
            )
        with contextlib.suppress(OSError):
            if ready():
                return
        time.sleep(0.1)
    raise TestbedError(
        f"{what} was not ready after {timeout:.0f}s; last lines of {log}:\n{log_tail(log)}"
    )
