"""The FailbackPlan controller: kopf registrations only; the behaviour lives in services."""

from __future__ import annotations

import kopf

from failback.controllers import routing
from failback.settings import Settings


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    """Publish the conditions that apply to each FailbackPlan, each Unknown until checked."""
    routing.register(registry, settings, routing.KINDS["FailbackPlan"])
