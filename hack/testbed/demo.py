"""``make demo``: the sample plan failed back on the test bed, shown live.

The machines of ``manifests/samples/`` (same names, same kinds of failback; small disks)
run in the Azure emulator with data on their disks. ``failback operator`` runs as its
ServiceAccount in ``failback-system`` and reprotects them (Azure → on-premises); the SRE
starts the plan with ``failback plan start``, approves the commit at the decision point
with ``failback plan approve``, and the machines come home and replicate back to Azure.
Then the demo proves it: each VM runs on-premises, its disks equal Azure's byte for byte,
and the two sites' own histories show that no VM ever ran on both.

``run`` is the whole of ``python -m testbed demo`` after the test bed is up; ``Demo`` is
its core, which tests drive on their own namespace.
"""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import yaml

from testbed import bed
from testbed import operator as operator_
from testbed.invariant import PairReport, check_never_both_running
from testbed.kube import Kube
from testbed.procs import TestbedError, log_tail, stop
from testbed.progress import LiveView, plan_rows, vm_rows, watch
from testbed.scenario import MIB, Machine, Scenario
from testbed.vcsim import plain_session

PLAN = "return-to-amsterdam"
RESOURCE_GROUP = "rg-dr-westeurope"
MACHINES = (
    # ERP database and application server: one replication group (R-GRP-1), original VMs.
    Machine("erp-db-01", replication_group="erp"),
    # SQL Server: its original VM is gone, a new VM at the alternate location; two disks.
    Machine("sql-01", original=False, disks=(4 * MIB, 4 * MIB)),
    Machine("erp-app-01", replication_group="erp"),
    # A physical server comes back as a new VM (R-LOC-3).
    Machine("batch-01", physical=True),
    # The web front end: delta sync into its original VM (R-LOC-1).
    Machine("web-01"),
)
SAMPLE_PLAN = Path(__file__).resolve().parents[2] / "manifests/samples/40-failbackplan.yaml"


def _sample_groups() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The sample plan's groups, as ``manifests/samples/`` has them."""
    spec = yaml.safe_load(SAMPLE_PLAN.read_text())["spec"]
    return tuple((g["name"], tuple(g["members"])) for g in spec["groups"])


GROUPS = _sample_groups()
PLAN_SPEC: dict[str, Any] = {
    "failover": {
        "type": "Planned",
        "recoveryPoint": {"type": "LatestCrashConsistent"},
        "multiVmConsistency": True,
    },
    "commit": {"mode": "Manual"},
    "reprotectAfterCommit": True,
}
FAILBACK = Path(sys.executable).parent / "failback"
REPLICATION_INTERVAL = 60.0
"""Seconds between two cycles of a VM in ``make demo``. The process server paces the
snapshots of an Azure replica disk to Azure's 7 per 5 minutes whatever its
``--snapshot-rate``: a shorter interval throttles the reverse replication (AzureThrottled)
while the test bed stays up to be explored."""


def groups_of(machines: Sequence[Machine]) -> list[tuple[str, list[str]]]:
    """The samples' groups, in order, holding only ``machines`` (empty groups dropped)."""
    names = {m.name for m in machines}
    out = [(g, [m for m in members if m in names]) for g, members in GROUPS]
    return [(g, members) for g, members in out if members]


def _status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    status: Mapping[str, Any] = obj.get("status") or {}
    return status


def _mib(size: int) -> str:
    return f"{size // MIB} MiB"


def _clock(at: Any) -> str:
    return "-" if at is None else at.strftime("%H:%M:%S.%f")[:-3]


@dataclass
class Demo:
    """The demo's core on a built-to-be ``Scenario``: every step prints to ``out``."""

    sc: Scenario
    kube: Kube
    workdir: Path
    out: TextIO
    tty: bool | None = None
    """Redraw the live views in place; None: when ``out`` is a terminal."""
    changed: Callable[[Demo], None] = lambda demo: None
    """Called when a process starts or stops (``run`` records them in the state file)."""
    timeout: float = 240.0
    operator: operator_.Operator | None = None
    since_seq: int = 0
    custom: Any = field(init=False)
    """The admin's ``CustomObjectsApi`` (what ``kubectl get`` shows)."""

    def __post_init__(self) -> None:
        from kubernetes import client, config

        api = config.new_client_from_config(str(self.kube.kubeconfig))  # type: ignore[no-untyped-call]
        self.custom = client.CustomObjectsApi(api)

    # ------------------------------------------------------------------ output

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def section(self, title: str) -> None:
        self.say()
        self.say(f"== {title}")

    def view(self) -> LiveView:
        return LiveView(self.out, self.tty)

    # ------------------------------------------------------------------ the objects

    def pvms(self) -> list[dict[str, Any]]:
        from failback.api.constants import GROUP, VERSION

        listed = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.sc.namespace, "protectedvms"
        )
        by_name = {o["metadata"]["name"]: o for o in listed["items"]}
        return [by_name[m] for m in self.sc.machines if m in by_name]

    def plan(self) -> dict[str, Any]:
        from failback.api.constants import GROUP, VERSION

        got: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.sc.namespace, "failbackplans", self.sc.plan
        )
        return got

    def target(self, obj: Mapping[str, Any]) -> str:
        """The instance UUID of the on-premises VM the machine runs as after failback."""
        from failback.api import protectedvm
        from failback.services.sites import target_vm_uuid

        return target_vm_uuid(protectedvm.parse(obj))

    def failback_cli(self, *args: str) -> str:
        """``failback plan ...`` as the SRE types it (the admin's kubeconfig); its output."""
        argv = [
            "plan", *args, self.sc.plan, "-n", self.sc.namespace,
            "--kubeconfig", str(self.kube.kubeconfig),
        ]  # fmt: skip
        self.say(f"$ failback {' '.join(argv)}")
        done = subprocess.run(
            [str(FAILBACK), *argv], capture_output=True, text=True, timeout=60, check=False
        )
        output = (done.stdout + done.stderr).rstrip()
        self.say(output)
        if done.returncode != 0:
            raise TestbedError(f"`failback {' '.join(argv)}` failed ({done.returncode})")
        return output

    # ------------------------------------------------------------------ the steps

    def build(self, machines: Sequence[Machine] = MACHINES) -> None:
        self.section("The machines (manifests/samples/, with 4 MiB disks)")
        groups = groups_of(machines)
        try:
            self.sc.build(machines, plan_extra=PLAN_SPEC, groups=groups)
        finally:
            self.changed(self)  # the data plane's processes, even half started
        self.since_seq = self.sc.emulator.control.events()[-1]["seq"]
        for m in machines:
            if m.physical:
                home = "physical server: comes back as a new VM"
            elif m.original:
                home = "original VM on-premises: delta sync into it"
            else:
                home = "original VM gone: a new VM at the alternate location"
            group = f", replication group {m.replication_group}" if m.replication_group else ""
            disks = " + ".join(_mib(d) for d in m.disks)
            self.say(f"  {m.name:<12} runs in Azure ({disks}); {home}{group}")
        order = " -> ".join(f"{g} [{', '.join(members)}]" for g, members in groups)
        self.say(f"  FailbackPlan {self.sc.plan}: {order}; Planned, commit Manual")
        self.say(
            f"  MasterTarget {self.sc.master_target} and ProcessServer "
            f"{self.sc.process_server} run as processes (the samples' Windows MT and Azure-"
            "deployed PS are not on the test bed: every machine here is Linux)"
        )

    def start_operator(self) -> None:
        self.operator = operator_.start(
            self.kube,
            self.workdir / "operator",
            recheck_interval=1,
            namespace=self.sc.namespace,
            extra_args=self.sc.operator_args(),
        )
        self.changed(self)
        self.say(
            f"  failback operator (pid {self.operator.pid}) serves {self.sc.namespace} as its "
            f"ServiceAccount; log: {self.operator.log_file}"
        )

    def reprotect(self) -> None:
        self.section("Reprotect: every machine replicates from Azure to on-premises")

        def protected(objs: list[dict[str, Any]]) -> bool:
            return len(objs) == len(self.sc.machines) and all(
                _status(o).get("phase") == "Protected"
                and (_status(o).get("recoveryPoints") or {}).get("count", 0) >= 1
                for o in objs
            )

        watch(
            self.view(), self.pvms, vm_rows, protected,
            what="every ProtectedVM Protected with a recovery point", timeout=self.timeout,
        )  # fmt: skip

    def fail_back(self) -> None:
        self.section("Failback: the SRE starts the plan")
        rng = random.Random(11)
        for name in self.sc.machines:
            for disk in self.sc.azure_disks(name):
                self.sc.write_azure(disk, rng)
        self.say("  (the applications keep writing in Azure until fenced: nothing is lost)")
        self.failback_cli("start")

        def phase(plan: Mapping[str, Any]) -> str:
            return str(_status(plan).get("phase"))

        def reached(*phases: str) -> Callable[[Mapping[str, Any]], bool]:
            return lambda plan: phase(plan) in (*phases, "Failed")

        view = self.view()
        plan = watch(
            view, self.plan, plan_rows, reached("FailedOver", "Completed"),
            what="the plan reached FailedOver", timeout=self.timeout,
        )  # fmt: skip
        view.done()
        self._refuse_failed(plan)
        if phase(plan) == "FailedOver":
            self.say()
            self.say(
                ">> FailedOver: every VM runs on-premises and its Azure VM is stopped; nothing "
                "is committed yet."
            )
            self.say(
                ">> The SRE's decision point: check the applications, then approve the commit "
                "(or `failback plan cancel` brings them back to Azure)."
            )
            self.failback_cli("approve")
            plan = watch(
                view, self.plan, plan_rows, reached("Completed"),
                what="the plan Completed", timeout=self.timeout,
            )  # fmt: skip
            self._refuse_failed(plan)
        self.section("Reverse replication: on-premises -> Azure, ready for the next disaster")

        def replicating_back(objs: list[dict[str, Any]]) -> bool:
            # Resynchronizing too: a VM that the failback created has no change tracking
            # on the test bed (vcsim's sidecar), so each of its later cycles is a full one.
            return all(
                _status(o).get("activeSite") == "OnPrem"
                and (_status(o).get("replication") or {}).get("direction") == "OnPremToAzure"
                and (_status(o).get("replication") or {}).get("state")
                in ("Replicating", "Resynchronizing")
                for o in objs
            )

        watch(
            self.view(), self.pvms, vm_rows, replicating_back,
            what="every VM replicating back to Azure", timeout=self.timeout,
        )  # fmt: skip

    def _refuse_failed(self, plan: Mapping[str, Any]) -> None:
        if _status(plan).get("phase") == "Failed":
            from failback.planctl import status_text

            raise TestbedError(f"the plan Failed:\n{status_text(plan)}")

    def prove(self) -> None:
        sc = self.sc
        self.section("Result")
        targets = {o["metadata"]["name"]: self.target(o) for o in self.pvms()}
        for name, target in targets.items():
            power = sc.power(target)
            vm = sc._find(target)
            self.say(
                f"  {name:<12} runs on-premises as VM {getattr(vm, 'name', '?')} "
                f"({target}): {power}"
            )
            if power != "poweredOn":
                raise TestbedError(f"{name}'s on-premises VM {target} is {power}")
        self.say("  Disks, on-premises against Azure, byte for byte:")
        for name, machine in sc.machines.items():
            target = targets[name]
            onprem = sc.onprem_bytes(target, machine.disks)
            azure = sc.azure_bytes(name)
            replicas = sc.azure_bytes(name, [f"{d}-reprotect" for d in sc.azure_disks(name)])
            if onprem != azure:
                raise TestbedError(f"{name}: the on-premises disks differ from Azure's")
            if replicas != onprem:
                raise TestbedError(f"{name}: the Azure replica disks differ from on-premises")
            digest = hashlib.sha256(b"".join(onprem)).hexdigest()[:16]
            self.say(
                f"    {name:<12} {len(onprem)} disk(s), {_mib(sum(machine.disks))}: equal "
                f"(sha256 {digest}…); the reverse replicas in Azure equal too"
            )
        pairs = [((sc.resource_group, name), target) for name, target in targets.items()]
        report = check_never_both_running(
            sc.emulator.control, sc.si, pairs, since_seq=self.since_seq
        )
        self.say(
            "  Never both running (from the Azure emulator's and vCenter's own event histories):"
        )
        for ((_, name), _), pair in zip(pairs, report.pairs, strict=True):
            self.say(f"    {name:<12} {_ran(pair)}")
        self.say()
        self.failback_cli("status")

    def play(self, machines: Sequence[Machine] = MACHINES) -> None:
        """Build, start the operator, reprotect, fail back, prove."""
        self.build(machines)
        self.start_operator()
        self.reprotect()
        self.fail_back()
        self.prove()

    def stop(self) -> None:
        """Stop the operator, then the data plane."""
        if self.operator is not None:
            stop(self.operator.pid)
            self.operator = None
        self.sc.stop()
        self.changed(self)


def _ran(pair: PairReport) -> str:
    azure = pair.azure[-1] if pair.azure else None
    onprem = pair.onprem[0] if pair.onprem else None
    azure_text = "Azure never ran" if azure is None else f"Azure ran until {_clock(azure.end)}"
    onprem_text = (
        "never ran on-premises" if onprem is None else f"on-premises from {_clock(onprem.start)}"
    )
    return f"{azure_text}, {onprem_text}: never both"


# ------------------------------------------------------------------ python -m testbed demo


def _explore(tb: bed.Testbed, demo: Demo) -> list[str]:
    listed = tb.kubectl().run("get", "failback", "-n", demo.sc.namespace).stdout.rstrip()
    hack = operator_.REPO / "hack"
    return [
        "",
        "== Explore (the test bed stays up; the operator keeps replicating to Azure)",
        f"  kubectl get failback -n {demo.sc.namespace}:",
        *(f"    {line}".rstrip() for line in listed.splitlines()),
        "",
        f'  eval "$(PYTHONPATH={hack} {sys.executable} -m testbed env)"',
        f"  kubectl get failback -n {demo.sc.namespace}",
        f"  kubectl describe protectedvm web-01 -n {demo.sc.namespace}",
        f"  {FAILBACK} plan status {demo.sc.plan} -n {demo.sc.namespace}",
        f"  operator log: {demo.operator.log_file if demo.operator else '-'}",
        f"  Stop it all: make down (state: {tb.root / bed.STATE_FILE})",
    ]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(tb: bed.Testbed, out: TextIO, tty: bool | None = None) -> int:
    """The demo on the running test bed ``tb`` (CRDs installed); 0 when it is proved.

    The operator and the data plane are recorded in the state file as they start, so
    ``make down`` stops them; on failure or Ctrl-C they are stopped here and the rest of
    the test bed stays up to be looked at."""
    kubectl = tb.kubectl()
    kubectl.run("apply", "--server-side", "-f", str(operator_.MANIFESTS / "namespace.yaml"))
    operator_.install_into(kubectl, operator_.NAMESPACE)
    signal.signal(signal.SIGTERM, _interrupt)
    state = [tb]

    def record(demo: Demo) -> None:
        state[0] = state[0].with_operator(demo.operator).with_services(demo.sc.data_plane_pids())
        state[0].save()

    with plain_session(tb.vcenter) as si:
        sc = Scenario(
            tb.root / "demo", operator_.NAMESPACE, kubectl, tb.azure, tb.vcenter, si,
            resource_group=RESOURCE_GROUP, plan=PLAN, master_target="mt-linux-01",
            process_server="ps-onprem-01", interval=REPLICATION_INTERVAL,
        )  # fmt: skip
        demo = Demo(sc, tb.kube, tb.root / "demo", out, tty, changed=record)
        try:
            demo.play()
        except (Exception, KeyboardInterrupt) as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            demo.say()
            demo.say("demo: interrupted" if interrupted else f"demo: failed: {exc}")
            if not isinstance(exc, TestbedError | KeyboardInterrupt):
                traceback.print_exc(file=out)
            if demo.operator is not None and not interrupted:
                demo.say(f"last lines of {demo.operator.log_file}:")
                demo.say(log_tail(demo.operator.log_file))
            demo.stop()
            demo.say(
                "The operator and the data plane are stopped; the rest of the test bed stays "
                "up to be looked at (`make down` stops it)."
            )
            return 130 if interrupted else 1
        for line in _explore(state[0], demo):
            demo.say(line)
    return 0
