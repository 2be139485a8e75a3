"""``failback plan``: what an SRE does with a FailbackPlan during a failback, at 3 a.m.

Every verb is a change of the plan's spec (so the same change can be a Git commit) or a
read of its status; the operator does the work::

    failback plan status NAME     phase, where the VMs run, the run, conditions, the step log
    failback plan start NAME      spec.activeSite = OnPrem (the failback)
    failback plan failover NAME   spec.activeSite = Azure after a committed failback
    failback plan cancel NAME     spec.activeSite back to status.committedSite, before commit
    failback plan approve NAME    spec.commit.approvedRunId = status.runId (Manual commit)
    failback plan dry-run NAME    spec.dryRun = true (``--off``: false)

Refusals say why and what to do instead, and exit with status 1; nothing is changed then.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from failback.api.constants import FAILBACK_PLAN, GROUP, VERSION

FINAL_PHASES = ("Committing", "Committed", "Reprotecting", "Completed")


class PlanError(Exception):
    """A verb that cannot be done; the message says why and what to do."""


class Plans:
    """The FailbackPlans of one namespace, through the Kubernetes API."""

    def __init__(self, custom: Any, namespace: str) -> None:
        self.custom = custom
        self.namespace = namespace

    def get(self, name: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, FAILBACK_PLAN.plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                raise PlanError(
                    f"failbackplan {self.namespace}/{name} not found "
                    f"(kubectl get failbackplans -n {self.namespace})"
                ) from exc
            raise PlanError(
                f"reading failbackplan {self.namespace}/{name}: {_reason(exc)}"
            ) from exc
        return found

    def patch_spec(self, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            patched: dict[str, Any] = self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, FAILBACK_PLAN.plural, name, {"spec": dict(spec)}
            )
        except ApiException as exc:
            raise PlanError(f"the API server refused the change: {_reason(exc)}") from exc
        return patched


def _reason(exc: Any) -> str:
    import json

    try:
        return str(json.loads(exc.body)["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.status} {exc.reason}"


# ------------------------------------------------------------------ the verbs


def status_text(plan: Mapping[str, Any]) -> str:
    """The plan as an SRE reads it: one screen, the step log last."""
    meta, spec, status = plan["metadata"], plan.get("spec", {}), plan.get("status") or {}
    commit = spec.get("commit") or {}
    lines = [
        f"FailbackPlan {meta['namespace']}/{meta['name']}",
        f"  phase:        {status.get('phase') or 'Pending (not observed by the operator yet)'}",
        f"  wanted site:  {spec.get('activeSite')}"
        f"   observed: {status.get('activeSite') or 'unknown'}",
        f"  settled at:   {status.get('committedSite') or 'Azure'}"
        f"   run moves to: {status.get('runTarget') or '-'}",
        f"  run:          {status.get('runId') or '-'}"
        f"   commit: {commit.get('mode', 'Automatic')}"
        + (f" (approved run {commit['approvedRunId']})" if commit.get("approvedRunId") else ""),
        f"  failover:     {(spec.get('failover') or {}).get('type', 'Planned')}"
        f"   dry run: {'yes' if spec.get('dryRun') else 'no'}",
    ]
    conditions = status.get("conditions") or []
    if conditions:
        lines.append("  conditions:")
        for c in conditions:
            message = f" — {c['message']}" if c.get("message") else ""
            lines.append(f"    {c['type']:<28} {c['status']:<7} {c.get('reason', '')}{message}")
    steps = status.get("steps") or []
    lines.append("  steps:" if steps else "  steps:        none yet")
    for s in steps:
        where = "/".join(x for x in (s.get("group"), s.get("vm")) if x) or "plan"
        message = f"  {s['message']}" if s.get("message") else ""
        lines.append(f"    {where:<28} {s['name']:<20} {s['state']:<10}{message}")
    return "\n".join(lines)


def start(plans: Plans, name: str) -> str:
    plan = plans.get(name)
    if plan["spec"].get("activeSite") == "OnPrem":
        return f"{name}: spec.activeSite is OnPrem already; `failback plan status {name}`"
    plans.patch_spec(name, {"activeSite": "OnPrem", "dryRun": False})
    return f"{name}: spec.activeSite set to OnPrem: the failback starts"


def failover(plans: Plans, name: str) -> str:
    plan = plans.get(name)
    home = (plan.get("status") or {}).get("committedSite") or "Azure"
    if home != "OnPrem":
        raise PlanError(
            f"{name}: its VMs are settled in Azure (status.committedSite): a failover to Azure "
            f"follows a committed failback; `failback plan start {name}` fails them back"
        )
    if plan["spec"].get("activeSite") == "Azure":
        return f"{name}: spec.activeSite is Azure already; `failback plan status {name}`"
    plans.patch_spec(name, {"activeSite": "Azure", "dryRun": False})
    return f"{name}: spec.activeSite set to Azure: the failover to Azure starts"


def cancel(plans: Plans, name: str) -> str:
    plan = plans.get(name)
    status = plan.get("status") or {}
    phase = status.get("phase")
    home = status.get("committedSite") or "Azure"
    if phase in FINAL_PHASES:
        back = "failover" if status.get("runTarget", "OnPrem") == "OnPrem" else "start"
        raise PlanError(
            f"{name} is {phase}: a committed run cannot be cancelled; its VMs stay where it "
            f"put them (`failback plan {back} {name}` moves them back, after reprotect)"
        )
    if plan["spec"].get("activeSite") == home:
        return f"{name}: spec.activeSite is {home} already: nothing to cancel"
    plans.patch_spec(name, {"activeSite": home})
    return f"{name}: spec.activeSite set back to {home}: the run is being cancelled"


def approve(plans: Plans, name: str) -> str:
    plan = plans.get(name)
    commit = plan["spec"].get("commit") or {}
    if commit.get("mode", "Automatic") != "Manual":
        raise PlanError(f"{name} commits automatically (spec.commit.mode): nothing to approve")
    run_id = (plan.get("status") or {}).get("runId")
    if not run_id:
        raise PlanError(f"{name} has no run to approve yet (status.runId is empty)")
    if commit.get("approvedRunId") == run_id:
        return f"{name}: run {run_id} is approved already"
    plans.patch_spec(name, {"commit": {**commit, "approvedRunId": run_id}})
    return f"{name}: run {run_id} approved: the failback commits"


def dry_run(plans: Plans, name: str, on: bool = True) -> str:
    plans.get(name)
    plans.patch_spec(name, {"dryRun": on})
    return f"{name}: spec.dryRun set to {'true' if on else 'false'}"


VERBS: dict[str, Callable[..., str]] = {
    "start": start,
    "failover": failover,
    "cancel": cancel,
    "approve": approve,
    "dry-run": dry_run,
}


def connect(kubeconfig: str | None) -> Any:
    """A CustomObjectsApi: in-cluster credentials, else ``kubeconfig`` (or the default)."""
    from kubernetes import client, config

    if kubeconfig is None:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            return client.CustomObjectsApi()
        except config.ConfigException:
            pass
    return client.CustomObjectsApi(
        config.new_client_from_config(kubeconfig)  # type: ignore[no-untyped-call]
    )
