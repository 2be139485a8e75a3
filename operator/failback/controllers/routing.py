"""One routed, level-based reconcile entry per kind.

Each kind has exactly one reconcile function. It is registered for resume (operator
start), create and update, and as a timer, so a missed event or drift outside
Kubernetes (a snapshot added in vCenter, an Azure VM started by hand) is caught on the
next pass. The function is idempotent: it observes, decides and writes the status it
computed, whatever triggered it.

Each kind's controller module calls :func:`route` with its service's handler.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import kopf

from failback.api import merge_patch
from failback.api.conditions import FALSE, Condition, ConditionType, Reason
from failback.api.constants import GROUP, VERSION, Resource
from failback.errors import SpecInvalid
from failback.settings import Settings

T = TypeVar("T")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def spec_invalid_status(
    old: Mapping[str, Any], body: Mapping[str, Any], error: SpecInvalid, now: dt.datetime
) -> dict[str, Any]:
    """``old`` with Ready False naming the field: the API server's validation was bypassed
    (or the CRD is older than the operator). The other conditions are kept as they were."""
    generation = int(body.get("metadata", {}).get("generation") or 0)
    ready = Condition(ConditionType.READY, FALSE, Reason.SPEC_INVALID, str(error), generation, now)
    kept = [c for c in old.get("conditions", []) if c.get("type") != ConditionType.READY]
    return {**old, "observedGeneration": generation, "conditions": [ready.to_dict(), *kept]}


def parse_or_report(
    body: Mapping[str, Any],
    patch: Any,
    parse: Callable[[Mapping[str, Any]], T],
    now: dt.datetime,
) -> T:
    """``parse(body)``; when the spec cannot be read, ``Ready`` False naming the field is
    patched into the status first, and ``SpecInvalid`` raised (for ``kopf_errors``)."""
    try:
        return parse(body)
    except SpecInvalid as exc:
        old = dict(body.get("status") or {})
        patch.status.update(merge_patch(old, spec_invalid_status(old, body, exc, now)))
        raise


class StatusStore(Protocol):
    async def get(self, namespace: str, plural: str, name: str) -> Mapping[str, Any] | None: ...

    async def patch_status(
        self, namespace: str, plural: str, name: str, patch: Mapping[str, Any]
    ) -> None: ...


async def latest(
    store: StatusStore, resource: Resource, body: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The object as the API server has it now (None: deleted). kopf hands a pass the body
    it saw before the pass waited for the object's previous one (:func:`one_at_a_time`),
    whose status has been written since: starting from it would, say, number a second run
    of one failback, or choose a VM's target disks again."""
    meta = body.get("metadata") or {}
    return await store.get(str(meta.get("namespace")), resource.plural, str(meta.get("name")))


async def write_status(
    store: StatusStore,
    resource: Resource,
    body: Mapping[str, Any],
    old: Mapping[str, Any],
    new: Mapping[str, Any],
) -> None:
    """Merge ``new`` over ``old`` into the object's status now, before the object's next
    pass may start (kopf would write it only after the handler returned)."""
    meta = body.get("metadata") or {}
    patch = merge_patch(dict(old), dict(new))
    if patch:
        await store.patch_status(
            str(meta.get("namespace")), resource.plural, str(meta.get("name")), patch
        )


def one_at_a_time(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with at most one call per object at a time.

    kopf runs an object's timer apart from its change handlers, so a resume or an update
    can reconcile while the timer does: two passes that both observe "no VM yet" would
    both create it. The second pass waits for the first and then observes afresh."""
    locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @functools.wraps(fn)
    async def serialized(*args: Any, **kwargs: Any) -> Any:
        uid = str((kwargs.get("body") or {}).get("metadata", {}).get("uid", ""))
        lock, users = locks.setdefault(uid, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                return await fn(*args, **kwargs)
        finally:
            users[0] -= 1
            if users[0] == 0:
                del locks[uid]  # nobody waits: no lock kept per object ever seen

    return serialized


def route(
    registry: kopf.OperatorRegistry,
    settings: Settings,
    resource: Resource,
    fn: Callable[..., Any],
    *,
    interval: float | None = None,
    idle: float | None = None,
) -> None:
    """Register ``fn`` as the one reconcile entry of ``resource``: resume, create, update and
    a timer every ``interval`` seconds (``settings.recheck_interval``) once the object has
    been unchanged for ``idle`` seconds (``settings.recheck_idle``)."""
    selector = (GROUP, VERSION, resource.plural)
    fn = one_at_a_time(fn)
    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(*selector, id="reconcile", registry=registry)(fn)
    kopf.timer(
        *selector,
        id="recheck",
        interval=settings.recheck_interval if interval is None else interval,
        idle=settings.recheck_idle if idle is None else idle,
        registry=registry,
    )(fn)
