"""Which agents a ProtectedVM is judged against: only a process server heard from now."""

from __future__ import annotations

from typing import Any

import pytest

from failback.api import processserver
from failback.services.protectedvm import registered_agents

AGENT = "/subscriptions/x/resourcegroups/rg/providers/microsoft.compute/virtualmachines/web-01"


def ps(heartbeat: str | None) -> processserver.ProcessServer:
    status: dict[str, Any] = {"registeredAgents": [AGENT]}
    if heartbeat is not None:
        status["conditions"] = [
            {"type": "Heartbeat", "status": heartbeat, "reason": "R", "message": "m",
             "lastTransitionTime": "2026-11-23T03:00:00Z", "observedGeneration": 1}
        ]  # fmt: skip
    return processserver.parse(
        {
            "metadata": {"name": "ps", "namespace": "dr", "uid": "u", "generation": 1},
            "spec": {"location": "Azure", "connectivity": "S2SVPN",
                     "endpoint": "https://ps:9443", "tlsSecretRef": {"name": "t"}},
            "status": status,
        }
    )  # fmt: skip


@pytest.mark.parametrize(
    ("heartbeat", "expected"),
    [("True", (AGENT,)), ("False", None), ("Unknown", None), (None, None)],
)
def test_agents_count_only_while_the_heartbeat_is_current(
    heartbeat: str | None, expected: tuple[str, ...] | None
) -> None:
    assert registered_agents(ps(heartbeat)) == expected


def test_no_process_server_no_agents() -> None:
    assert registered_agents(None) is None
