"""Fault injection: rules that make matching requests fail the way Azure fails.

A rule (``POST /_emulator/faults``) matches by route class (see ``stats``), method and a
regular expression searched in the path (never the query), and fires ``times`` times
(default 1) or for ``for_seconds`` of emulated time. The first live matching rule wins.

Actions:

- ``error``: answer ``status`` (e.g. 429, 500, 503) with ``code``/``message`` in the
  shape of the service (ARM JSON, Storage XML, AAD JSON) and ``Retry-After:
  retry_after`` when given;
- ``hang``: hold the connection ``seconds`` (real) and then drop it unanswered, to
  outlast a client's read timeout;
- ``close``: drop the connection at once without an answer;
- ``delay``: wait ``seconds`` (real), then serve the request normally;
- ``fail_operation``: accept an ARM write normally, but let its long-running operation
  end ``Failed`` with ``code``/``message`` (the resource is left as before);
- ``corrupt``: serve a Put Page normally (201), but store its data with the first byte
  flipped: a silent corruption, or a disk changed under its writer (route ``blob_write``
  by default).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

ACTIONS = ("error", "hang", "close", "delay", "fail_operation", "corrupt")


@dataclass
class FaultRule:
    id: str
    action: str
    route: str = "any"
    method: str | None = None
    path: str | None = None
    status: int = 503
    code: str | None = None
    message: str | None = None
    retry_after: int | None = None
    seconds: float = 0.0
    times: int | None = 1
    until: float | None = None
    hits: int = 0

    def live(self, now: float) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        return self.until is None or now < self.until

    def matches(self, route: str, method: str, path: str) -> bool:
        if self.route != "any" and self.route != route:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path is None or re.search(self.path, path) is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "route": self.route,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "retry_after": self.retry_after,
            "seconds": self.seconds,
            "times_left": self.times,
            "until": self.until,
            "hits": self.hits,
        }


def parse_rule(spec: dict[str, Any], now: float) -> FaultRule:
    """A rule from its JSON form; raises ValueError with what is wrong."""
    allowed = {
        "action",
        "route",
        "method",
        "path",
        "status",
        "code",
        "message",
        "retry_after",
        "seconds",
        "times",
        "for_seconds",
    }
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"unknown fault fields: {', '.join(unknown)}")
    action = spec.get("action")
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
    default_route = {"fail_operation": "arm_write", "corrupt": "blob_write"}.get(action, "any")
    route = spec.get("route", default_route)
    if not isinstance(route, str):
        raise ValueError("route must be a string")
    path = spec.get("path")
    if path is not None:
        try:
            re.compile(path)
        except re.error as err:
            raise ValueError(f"path is not a regular expression: {err}") from None
    status = int(spec.get("status", 503))
    if not 400 <= status <= 599:
        raise ValueError("status must be an HTTP error status (400-599)")
    times = spec.get("times")
    for_seconds = spec.get("for_seconds")
    if times is None and for_seconds is None:
        times = 1
    retry_after = spec.get("retry_after")
    return FaultRule(
        id=secrets.token_hex(4),
        action=action,
        route=route,
        method=spec.get("method"),
        path=path,
        status=status,
        code=spec.get("code"),
        message=spec.get("message"),
        retry_after=None if retry_after is None else int(retry_after),
        seconds=float(spec.get("seconds", 0.0)),
        times=None if times is None else int(times),
        until=None if for_seconds is None else now + float(for_seconds),
    )


class Faults:
    def __init__(self) -> None:
        self.rules: list[FaultRule] = []

    def add(self, rule: FaultRule) -> None:
        self.rules.append(rule)

    def clear(self) -> None:
        self.rules.clear()

    def remove(self, rule_id: str) -> bool:
        before = len(self.rules)
        self.rules = [r for r in self.rules if r.id != rule_id]
        return len(self.rules) != before

    def fire(self, route: str, method: str, path: str, now: float) -> FaultRule | None:
        """The first live rule matching the request, counted as used."""
        for rule in self.rules:
            if rule.live(now) and rule.matches(route, method, path):
                rule.hits += 1
                if rule.times is not None:
                    rule.times -= 1
                return rule
        return None
