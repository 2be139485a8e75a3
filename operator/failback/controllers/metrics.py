"""The operator's Prometheus metrics, served on ``--metrics-port`` (``/metrics``).

What an SRE graphs and alerts on during a failback:

- ``failback_plan_phase{namespace,plan,phase}``: 1 for the plan's current phase, 0 for
  the others (alert on ``Failed``; graph a run's course);
- ``failback_plan_step_duration_seconds{step}``: how long each step took, observed when it
  ends (Succeeded or Failed);
- ``failback_plan_step_failures_total{step}``: steps that failed;
- ``failback_vm_rpo_seconds{namespace,vm}``: each ProtectedVM's RPO (alert above its
  threshold; ``failback_vm_rpo_threshold_seconds`` beside it);
- ``failback_vm_recovery_points{namespace,vm}``: the recovery points it has.

One registry per operator (not the library's global one), so tests can read it.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from failback.api.failbackplan import PlanPhase, StepState
from failback.domain.steplog import Transition

REGISTRY = CollectorRegistry(auto_describe=True)

PLAN_PHASE = Gauge(
    "failback_plan_phase",
    "1 for the FailbackPlan's current phase, 0 for the others.",
    ["namespace", "plan", "phase"],
    registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "failback_plan_step_duration_seconds",
    "How long a failback step took, from its start to its end.",
    ["step"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, float("inf")),
    registry=REGISTRY,
)
STEP_FAILURES = Counter(
    "failback_plan_step_failures_total",
    "Failback steps that failed.",
    ["step"],
    registry=REGISTRY,
)
VM_RPO = Gauge(
    "failback_vm_rpo_seconds",
    "Seconds between now and the source time of the VM's newest durable recovery point.",
    ["namespace", "vm"],
    registry=REGISTRY,
)
VM_RPO_THRESHOLD = Gauge(
    "failback_vm_rpo_threshold_seconds",
    "The VM's spec.policy.rpoThreshold.",
    ["namespace", "vm"],
    registry=REGISTRY,
)
VM_POINTS = Gauge(
    "failback_vm_recovery_points",
    "How many recovery points the VM has.",
    ["namespace", "vm"],
    registry=REGISTRY,
)


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - a pod's port
    """Serve ``/metrics`` on ``port`` from a background thread."""
    start_http_server(port, addr=address, registry=REGISTRY)


def plan(namespace: str, name: str, phase: PlanPhase, transitions: Iterable[Transition]) -> None:
    for each in PlanPhase:
        PLAN_PHASE.labels(namespace, name, each.value).set(1 if each is phase else 0)
    for t in transitions:
        step = t.step
        if step.state not in (StepState.SUCCEEDED, StepState.FAILED):
            continue
        if step.start_time is not None and step.end_time is not None:
            seconds = (step.end_time - step.start_time).total_seconds()
            STEP_DURATION.labels(step.name).observe(max(0.0, seconds))
        if step.state is StepState.FAILED:
            STEP_FAILURES.labels(step.name).inc()


def vm(namespace: str, name: str, rpo: int | None, threshold: float, points: int | None) -> None:
    if rpo is not None:
        VM_RPO.labels(namespace, name).set(rpo)
    VM_RPO_THRESHOLD.labels(namespace, name).set(threshold)
    VM_POINTS.labels(namespace, name).set(points or 0)
