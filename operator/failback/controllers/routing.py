"""One routed, level-based reconcile entry per kind.

Each kind has exactly one reconcile function. It is registered for resume (operator
start), create and update, and as a timer, so a missed event or drift outside
Kubernetes (a snapshot added in vCenter, an Azure VM started by hand) is caught on the
next pass. The function is idempotent: it observes, decides and writes the status it
computed, whatever triggered it.

:data:`KINDS` lists the kinds whose checks have not landed yet (today: FailbackPlan,
which comes with the orchestration): their reconcile publishes the conditions that apply
to the spec, each ``Unknown`` with ``observedGeneration``. The other kinds have a
controller module of their own that calls :func:`route` with their service's handler.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import kopf

from failback.api import failbackplan, merge_patch
from failback.api.conditions import FALSE, Condition, ConditionType, Reason
from failback.api.constants import (
    FAILBACK_PLAN,
    GROUP,
    VERSION,
    Resource,
)
from failback.controllers.bridge import kopf_errors
from failback.domain.status import refresh_conditions
from failback.errors import SpecInvalid
from failback.settings import Settings


class _Status(Protocol):
    @property
    def conditions(self) -> tuple[Condition, ...]: ...


class _Meta(Protocol):
    @property
    def generation(self) -> int: ...


class _Object(Protocol):
    @property
    def meta(self) -> _Meta: ...
    @property
    def status(self) -> _Status: ...


@dataclass(frozen=True)
class Kind:
    """What the routed reconcile needs to know of one kind."""

    resource: Resource
    parse: Callable[[Mapping[str, Any]], Any]
    applicable: Callable[[Any], tuple[str, ...]]
    """The condition types that apply to a parsed object (some depend on its spec)."""
    ready_inputs: Callable[[Any], tuple[str, ...]]
    """The condition types ``Ready`` summarizes."""
    phase: Callable[[Iterable[Condition]], str]


KINDS: dict[str, Kind] = {
    k.resource.kind: k
    for k in (
        Kind(
            FAILBACK_PLAN,
            failbackplan.parse,
            lambda _: failbackplan.CONDITION_TYPES,
            lambda _: failbackplan.VALIDATIONS,
            failbackplan.derive_phase,
        ),
    )
}
"""The kinds still served by the generic seeding reconcile, by ``kind``."""


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def status_of(kind: Kind, body: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """The status ``body`` should have now (``SpecInvalid`` if its spec cannot be read)."""
    obj: _Object = kind.parse(body)
    generation = obj.meta.generation
    conditions = refresh_conditions(
        obj.status.conditions, kind.applicable(obj), kind.ready_inputs(obj), generation, now
    )
    return {
        "observedGeneration": generation,
        "phase": str(kind.phase(conditions)),
        "conditions": [c.to_dict() for c in conditions],
    }


def spec_invalid_status(
    old: Mapping[str, Any], body: Mapping[str, Any], error: SpecInvalid, now: dt.datetime
) -> dict[str, Any]:
    """``old`` with Ready False naming the field: the API server's validation was bypassed
    (or the CRD is older than the operator). The other conditions are kept as they were."""
    generation = int(body.get("metadata", {}).get("generation") or 0)
    ready = Condition(ConditionType.READY, FALSE, Reason.SPEC_INVALID, str(error), generation, now)
    kept = [c for c in old.get("conditions", []) if c.get("type") != ConditionType.READY]
    return {**old, "observedGeneration": generation, "conditions": [ready.to_dict(), *kept]}


def handler(kind: Kind) -> Callable[..., Any]:
    """The thin kopf handler of ``kind``: parse, compute, patch status, map errors."""

    async def reconcile(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        at = now()
        old = dict(body.get("status") or {})
        with kopf_errors():
            try:
                new = status_of(kind, body, at)
            except SpecInvalid as exc:
                patch.status.update(merge_patch(old, spec_invalid_status(old, body, exc, at)))
                raise
        patch.status.update(merge_patch(old, {**old, **new}))

    reconcile.__name__ = reconcile.__qualname__ = f"reconcile_{kind.resource.singular}"
    return reconcile


def register(registry: kopf.OperatorRegistry, settings: Settings, kind: Kind) -> None:
    """Route resume, create, update and the re-check timer of ``kind`` to its handler."""
    route(registry, settings, kind.resource, handler(kind))


def route(
    registry: kopf.OperatorRegistry,
    settings: Settings,
    resource: Resource,
    fn: Callable[..., Any],
) -> None:
    """Register ``fn`` as the one reconcile entry of ``resource``: resume, create, update and
    a timer every ``settings.recheck_interval`` seconds once the object is idle."""
    selector = (GROUP, VERSION, resource.plural)
    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(*selector, id="reconcile", registry=registry)(fn)
    kopf.timer(
        *selector,
        id="recheck",
        interval=settings.recheck_interval,
        idle=settings.recheck_idle,
        registry=registry,
    )(fn)
