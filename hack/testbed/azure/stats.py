"""Request counters, so tests can assert what reached "Azure" (e.g. no second write)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

ROUTE_CLASSES = (
    "arm_write",
    "arm_read",
    "arm_poll",
    "token",
    "identity_discovery",
    "blob_read",
    "blob_write",
    "other",
)
"""How requests are classed (``control`` requests are not counted):

- ``arm_write``: PUT/POST/PATCH/DELETE under ``/subscriptions``;
- ``arm_read``: GET of resources and lists;
- ``arm_poll``: GET of a long-running operation's status or ``Location`` URL;
- ``token``: token requests; ``identity_discovery``: OpenID metadata;
- ``blob_read``: HEAD/GET on a SAS URL (properties, data, page ranges, diffs);
- ``blob_write``: Put Page (update or clear).
"""


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests: Counter[str] = Counter()
        self.by_method: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.arm_writes_by_operation: Counter[str] = Counter()
        self.responses: Counter[int] = Counter()
        self.responses_by_route: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self.faults_injected = 0
        self.operations: Counter[str] = Counter()

    def request(self, route: str, method: str, operation: str | None) -> None:
        self.requests[route] += 1
        self.by_method[route][method] += 1
        if route == "arm_write" and operation:
            self.arm_writes_by_operation[operation] += 1

    def response(self, route: str, status: int) -> None:
        self.responses[status] += 1
        self.responses_by_route[route][status] += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": {route: self.requests.get(route, 0) for route in ROUTE_CLASSES},
            "requests_by_method": {k: dict(v) for k, v in sorted(self.by_method.items())},
            "arm_writes_by_operation": dict(sorted(self.arm_writes_by_operation.items())),
            "responses_by_status": {str(k): v for k, v in sorted(self.responses.items())},
            "responses_by_route": {
                route: {str(k): v for k, v in sorted(counts.items())}
                for route, counts in sorted(self.responses_by_route.items())
            },
            "throttled": self.responses.get(429, 0),
            "faults_injected": self.faults_injected,
            "operations": {
                key: self.operations.get(key, 0) for key in ("started", "succeeded", "failed")
            },
        }
