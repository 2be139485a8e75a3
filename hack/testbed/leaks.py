"""The leak guard: every log line of a test, checked for secrets when it ends.

``guard_logs`` collects every record of every logger at DEBUG (and, when given, the
Azure emulator's own log) and fails if a known secret, a SAS signature, a bearer token
or an access token shows up in any of it. Tests add the secrets they learn (SAS URLs,
client secrets) to ``guard.secrets``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LeakGuard:
    """Collects every log line of a test; fails it if a secret shows up in one."""

    secrets: list[str] = field(default_factory=list)
    """Values that must never be logged (a test adds the SAS URLs and tokens it sees)."""
    lines: list[str] = field(default_factory=list)

    def check(self) -> None:
        text = "\n".join(self.lines)
        for secret in self.secrets:
            assert secret not in text, "a secret was logged"
        signatures = re.findall(r"(?i)\bsig=([^&\s\"']+)", text)
        assert all(s.upper() == "REDACTED" for s in signatures), "a SAS signature was logged"
        bearers = re.findall(r"(?i)\bbearer\s+([A-Za-z0-9\-._~+/]{20,})", text)
        assert bearers == [], "a bearer token was logged"
        tokens = re.findall(r"access_token[\"']?\s*[:=]\s*[\"']?([^\"'\s,}]+)", text)
        assert all(set(t) == {"*"} for t in tokens), "an access token was logged"


class _Collect(logging.Handler):
    def __init__(self, guard: LeakGuard) -> None:
        super().__init__(logging.DEBUG)
        self.guard = guard
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.guard.lines.append(self.format(record))
        if record.exc_info and record.exc_info[1] is not None:
            self.guard.lines.append(repr(record.exc_info[1]))


@contextmanager
def guard_logs(guard: LeakGuard, *extra_logs: Path | None) -> Iterator[LeakGuard]:
    """Collect into ``guard`` for the block, then check it (with ``extra_logs``' lines:
    the logs of the processes the test ran)."""
    handler = _Collect(guard)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield guard
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    for extra_log in extra_logs:
        if extra_log is not None and extra_log.exists():
            guard.lines.extend(extra_log.read_text(errors="replace").splitlines())
    guard.check()
