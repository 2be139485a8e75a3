"""Reconcile a ProtectedVM: observe the objects it names, both sites, then one status.

One pass reads, in this order, and writes nothing outside Kubernetes:

1. the MasterTarget and ProcessServer the spec names, the namespace's ProtectedVMs and
   FailbackPlans (replication groups, R-GRP-1; the plan that owns the VM);
2. the Azure side (``azure_preflight``: the VM, its OS and disks, R-PRE-13);
3. the on-premises side (``onprem_preflight``: vCenter permissions, the original VM,
   the location decision R-LOC-1/2/3, R-PRE-1/2/10/14/15/16/17);

and merges every verdict (``domain.protectedvm``); then replication
(``services.replication``) takes its one step and reports progress, RPO and points.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from failback.api import failbackplan, mastertarget, processserver
from failback.api import protectedvm as api
from failback.api.common import Site
from failback.api.conditions import TRUE, Condition, ConditionType, find_condition
from failback.api.constants import FAILBACK_PLAN, MASTER_TARGET, PROCESS_SERVER, PROTECTED_VM
from failback.api.protectedvm import LocationTarget
from failback.domain import protectedvm as rules
from failback.errors import SpecInvalid
from failback.ports.azure import AzureClients
from failback.ports.kubernetes import ObjectReader, SecretReader
from failback.ports.vsphere import VCenters
from failback.services import replication
from failback.services.azure_preflight import azure_preflight
from failback.services.onprem_preflight import onprem_preflight


@dataclass(frozen=True)
class Dependencies:
    objects: ObjectReader
    secrets: SecretReader
    vcenters: VCenters
    azure: AzureClients
    replication: replication.Deps


@dataclass(frozen=True)
class Outcome:
    status: api.ProtectedVMStatus
    retry_after: float | None = None
    """Seconds after which another pass is worth it (R-PRE-13's wait, a throttle)."""
    events: tuple[str, ...] = ()
    """What this pass did (Events on the ProtectedVM)."""


def _parsed(items: list[Mapping[str, Any]], parse: Any) -> list[Any]:
    """The objects that parse; one a user broke is reported on itself, not here."""
    parsed = []
    for item in items:
        try:
            parsed.append(parse(item))
        except SpecInvalid:
            continue
    return parsed


def _lists(plan: Mapping[str, Any], name: str) -> bool:
    """Whether a FailbackPlan's raw body names ``name`` among its members."""
    groups = (plan.get("spec") or {}).get("groups") or []
    return any(name in (g.get("members") or []) for g in groups if isinstance(g, dict))


def registered_agents(ps: processserver.ProcessServer | None) -> tuple[str, ...] | None:
    """The agents the process server reports; None unless its heartbeat is current (then
    AgentRegistered says the process server was not heard from, rather than trusting an
    old list)."""
    if ps is None:
        return None
    heartbeat = find_condition(ps.status.conditions, ConditionType.HEARTBEAT)
    if heartbeat is None or heartbeat.status != TRUE:
        return None
    return ps.status.registered_agents


async def reconcile(vm: api.ProtectedVM, deps: Dependencies, now: dt.datetime) -> Outcome:
    """One level-based pass over ``vm`` (see the module doc)."""
    namespace, generation = vm.meta.namespace, vm.meta.generation
    objects = deps.objects
    mt_body = await objects.get(namespace, MASTER_TARGET.plural, vm.spec.master_target_ref.name)
    ps_body = await objects.get(namespace, PROCESS_SERVER.plural, vm.spec.process_server_ref.name)
    # Only what this VM is judged against is decoded: its replication group's peers (no
    # list at all outside a group) and the plans that list it. Decoding every object of
    # the namespace on every pass made a round O(N²) (hack/bench/controlplane.py).
    group = vm.spec.replication_group
    peers = (
        _parsed(
            [
                b
                for b in await objects.list(namespace, PROTECTED_VM.plural)
                if (b.get("spec") or {}).get("replicationGroup") == group
            ],
            api.parse,
        )
        if group is not None
        else []
    )
    plans = _parsed(
        [b for b in await objects.list(namespace, FAILBACK_PLAN.plural) if _lists(b, vm.meta.name)],
        failbackplan.parse,
    )
    mt = next(iter(_parsed([mt_body], mastertarget.parse)), None) if mt_body else None

    ps = next(iter(_parsed([ps_body], processserver.parse)), None) if ps_body else None
    azure = await azure_preflight(
        vm, deps.azure, deps.secrets, now, registered_agents=registered_agents(ps)
    )
    onprem = await onprem_preflight(vm, mt, deps.secrets, deps.vcenters, now)

    problems = rules.missing_objects(vm, mt, ps_body is not None, generation, now)
    judged: list[Condition] = [azure.condition]
    for condition in onprem.conditions:
        if condition.type == ConditionType.REFERENCES_RESOLVED:
            problems.append(condition)
        else:
            judged.append(condition)
    if azure.references is not None:
        problems.append(azure.references)
    judged.append(rules.references(vm, problems, generation, now))
    for optional in (
        rules.replication_group(vm, peers, plans, generation, now),
        rules.retention_volume(vm, mt, generation, now),
    ):
        if optional is not None:
            judged.append(optional)
    view = rules.plan_view(vm, plans)
    startable = _startable(vm, judged, problems)
    alternate = onprem.location is not None and onprem.location.target == LocationTarget.ALTERNATE
    own = replication.Ownership(
        plan=view.plan,
        held=view.held,
        # Where the plan left it; with no plan (deleted after a failback), where it ran.
        active_on_prem=(
            view.site is Site.ON_PREM
            if view.site is not None
            else vm.status.active_site == Site.ON_PREM
        ),
        reprotect=view.reprotect,
        awaiting_commit=view.awaiting_commit,
        peers=tuple(p for p in peers if p.meta.name != vm.meta.name),
    )
    result = await replication.replicate(
        vm, mt, ps, azure.vm, alternate, own, startable, deps.replication, now
    )
    judged.extend(result.conditions)
    observed = rules.Observed(
        active_site=result.active_site,
        allowed_actions=result.allowed_actions,
        replication=result.replication,
        rpo_seconds=result.rpo_seconds,
        recovery_points=result.recovery_points,
        failing_back=view.held,
    )
    status = rules.assemble(vm, judged, onprem.location, view.plan, now, observed)
    retry = [r for r in (azure.retry_after, result.retry_after) if r is not None]
    return Outcome(status, min(retry) if retry else None, result.events)


def _startable(vm: api.ProtectedVM, judged: list[Condition], problems: list[Condition]) -> bool:
    """Replication starts once every prerequisite but AgentRegistered (which waits for the
    process server's first snapshot, R-PRE-13) passed."""
    if any(p.status != TRUE for p in problems):
        return False
    wanted = set(api.condition_types(vm.spec)) & set(api.PREREQUISITES)
    wanted -= {ConditionType.AGENT_REGISTERED, ConditionType.REFERENCES_RESOLVED}
    seen = {c.type: c.status for c in judged}
    return all(seen.get(t) == TRUE for t in wanted)
