"""Benchmark: the control plane at scale, the data plane replaced by a fast fake.

Starts its own test bed (kube-apiserver + etcd, vcsim, the Azure emulator at real time
with short long-running operations) and ``hack/bench/fakeplane.py`` (one process playing
every master target and process server behind their real control APIs, over mutual TLS;
a session "replicates" instantly), the master targets (``--vms-per-mt`` disks each: a
master target VM takes 60 at most) and process servers (``--vms-per-ps`` sessions each),
and the real operator as a process (its ServiceAccount, the manifests' RBAC, like
tests/e2e). Once the operator has reconciled those (its idle RSS), it creates ``--vms``
ProtectedVMs whose Azure VMs exist in the emulator (one 1 MiB disk each), failing back to
the alternate location in vcsim (no original VMs), and a FailbackPlan of the first
``--plan-vms`` of them (``activeSite: Azure``, Automatic commit, no reprotect after
commit), and measures, in one run:

- **converge**: time until every ProtectedVM is Protected with a recovery point (the
  phase), per object (p50, p99, last) and amortized;
- **API writes** by the operator per object: ``apiserver_request_total`` (the API
  server's /metrics) before and after each phase, POST/PUT/PATCH/DELETE/APPLY by resource,
  minus the benchmark's own writes (the only other writer on this API server);
- **steady state**: ``--steady`` seconds after convergence, nothing changing: writes,
  passes (the fake PS's ``GET`` of a session: one per ProtectedVM pass) and operator CPU;
- **spec → status**: ``spec.policy.rpoThreshold`` changed on ``--changes`` objects at once
  (a burst), then on 5 objects one at a time; the time until ``status.observedGeneration``
  catches up, p50 and p99, against the time the same watch delivers the spec change;
- **memory**: the operator's RSS (``VmRSS``) and peak (``VmHWM``) from /proc;
- **failback**: the plan's ``activeSite`` flipped to OnPrem: time to ``Completed``, per VM;
- **CPU**: seconds each process spent in each phase (2 cores: who saturates the machine);
- **data-plane calls** per object (the fake's request counts).

The **baseline**, measured in the same run once the operator is stopped: the same number
of plain API writes done one after another with the admin's client — creating ``--vms``
ProtectedVMs in another namespace, then one status PATCH each with a status the operator
wrote (same size). Times are printed as ratios against it ("x baseline": a phase's time
over that of as many plain status patches as objects involved). Nothing is asserted.

``--azure-reads-per-hour`` starts the operator with another client-side pace of ARM reads
(a wrapper: the product has no flag for it): with its default, from about 100 VMs on, the
run measures Azure's read budget more than the control plane. Run:

    PYTHONPATH=hack:operator .venv/bin/python hack/bench/controlplane.py [--vms 1000]
        [--plan-vms 100] [--quick] [--json FILE]

(``make bench-controlplane`` does the same with the defaults.)
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file's folder holds azure.py: keep it off sys.path (it would hide the azure package).
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import contextlib
import copy
import json
import math
import os
import re
import shutil
import ssl
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from failback.api.constants import GROUP, VERSION
from testbed import build
from testbed import operator as operator_
from testbed.azure.process import AzureEmulator, start_azure_emulator
from testbed.dataplane import Https
from testbed.kube import Kube, service_account_kubeconfig, start_kube
from testbed.pki import Pki
from testbed.procs import TestbedError, log_tail, spawn, stop, wait_until
from testbed.tools import Tool
from testbed.vcsim import VCenter, start_vcenter

HERE = Path(__file__).resolve().parent
MIB = 1 << 20
DATACENTER, HOST, DATASTORE = "DC0", "DC0_H0", "LocalDS_0"
NAMESPACE = "bench"
BASELINE_NAMESPACE = "bench-baseline"
RESOURCE_GROUP = "rg-bench"
PLAN = "bench-plan"
TICK = os.sysconf("SC_CLK_TCK")
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY"})
ISOLATED_CHANGES = 5
API_SERVER_OWN = frozenset({"leases", "endpoints", "endpointslices"})
"""What the API server writes itself (its lease, the ``kubernetes`` Service's endpoints)."""


# ---------------------------------------------------------------------------- small tools


def pct(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def memory(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of ``pid`` in bytes."""
    out = {}
    with contextlib.suppress(FileNotFoundError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def fmt(value: float | None, unit: str = "s", digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f} {unit}".rstrip()


def say(text: str) -> None:
    print(text, flush=True)


# ---------------------------------------------------------------------------- the API server


_METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def api_writes(kube: Kube) -> Counter[str]:
    """Write requests the API server served so far, by ``VERB resource[/subresource]``
    (its own writes left out: :data:`API_SERVER_OWN`)."""
    context = ssl.create_default_context(cafile=str(kube.ca_file))
    context.load_cert_chain(str(kube.client_cert), str(kube.client_key))
    with urllib.request.urlopen(f"{kube.server}/metrics", context=context, timeout=30) as resp:  # noqa: S310
        text = resp.read().decode()
    out: Counter[str] = Counter()
    for line in text.splitlines():
        m = _METRIC.match(line)
        if m is None:
            continue
        labels = dict(_LABEL.findall(m["labels"]))
        if labels.get("verb") not in WRITE_VERBS or labels.get("resource") in API_SERVER_OWN:
            continue
        what = labels.get("resource", "?")
        if labels.get("subresource"):
            what += "/" + labels["subresource"]
        out[f"{labels['verb']} {what}"] += int(float(m["value"]))
    return out


def minus(after: Counter[str], before: Counter[str], own: Counter[str]) -> Counter[str]:
    """What others (the operator) wrote between two scrapes: ``own`` writes removed."""
    delta = Counter({k: after[k] - before.get(k, 0) for k in after})
    delta.subtract(own)
    return Counter({k: v for k, v in delta.items() if v > 0})


@dataclass
class Api:
    """The admin's clients (one per thread that uses them) and the benchmark's own writes."""

    kube: Kube
    own: Counter[str] = field(default_factory=Counter)

    def client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(str(self.kube.kubeconfig))  # type: ignore[no-untyped-call]

    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.client())


# ---------------------------------------------------------------------------- the watch


@dataclass
class Seen:
    """What the watch saw of one ProtectedVM, with ``time.monotonic()`` of each event."""

    generation: int = 0
    observed: int = 0
    protected_at: float | None = None
    generation_at: dict[int, float] = field(default_factory=dict)
    """When the watch first delivered each ``metadata.generation``."""
    observed_at: dict[int, float] = field(default_factory=dict)
    """When the watch first delivered each ``status.observedGeneration``."""
    phase: str | None = None
    history: list[tuple[float, str, list[str]]] = field(default_factory=list)
    """Of sampled objects: each status seen (time, phase, the conditions not True)."""


def protected(obj: dict[str, Any]) -> bool:
    """Protected with a recovery point (as tests/e2e waits for it)."""
    status = obj.get("status") or {}
    return (
        status.get("phase") == "Protected"
        and (status.get("recoveryPoints") or {}).get("count", 0) >= 1
    )


class Watcher:
    """Watches the ProtectedVMs and the plan of the namespace in threads, stamping events."""

    def __init__(self, api: Api, namespace: str, sampled: Sequence[str] = ()) -> None:
        self.api = api
        self.namespace = namespace
        self.sampled = frozenset(sampled)
        self.vms: dict[str, Seen] = {}
        self.plan_phases: list[tuple[float, str]] = []
        self.plan: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=("protectedvms",), daemon=True),
            threading.Thread(target=self._run, args=("failbackplans",), daemon=True),
        ]
        self.events = 0

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def _run(self, plural: str) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        custom = self.api.custom()
        version = ""
        while not self.stopping.is_set():
            try:
                if not version:
                    listed = custom.list_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, plural
                    )
                    for item in listed.get("items", []):
                        self._record(plural, item, time.monotonic())
                    version = listed["metadata"]["resourceVersion"]
                for event in watch.Watch().stream(  # type: ignore[no-untyped-call]
                    custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    plural,
                    resource_version=version,
                    timeout_seconds=30,
                    allow_watch_bookmarks=True,
                ):
                    at = time.monotonic()
                    obj = event["object"]
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._record(plural, obj, at)
                    if self.stopping.is_set():
                        return
            except ApiException as exc:
                if exc.status == 410:
                    version = ""  # too old: list again
                elif not self.stopping.wait(1.0):
                    say(f"  (watch of {plural}: {exc.status} {exc.reason}; again)")
            except Exception as exc:  # the API server went away: at the end, or a hiccup
                if not self.stopping.wait(1.0):
                    say(f"  (watch of {plural}: {type(exc).__name__}; again)")

    def _record(self, plural: str, obj: dict[str, Any], at: float) -> None:
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        with self.changed:
            self.events += 1
            if plural == "failbackplans":
                self.plan = obj
                phase = status.get("phase")
                if phase and (not self.plan_phases or self.plan_phases[-1][1] != phase):
                    self.plan_phases.append((at, str(phase)))
            else:
                seen = self.vms.setdefault(meta["name"], Seen())
                gen, observed = (
                    int(meta.get("generation") or 0),
                    int(status.get("observedGeneration") or 0),
                )
                seen.generation, seen.observed, seen.phase = gen, observed, status.get("phase")
                seen.generation_at.setdefault(gen, at)
                seen.observed_at.setdefault(observed, at)
                if seen.protected_at is None and protected(obj):
                    seen.protected_at = at
                if meta["name"] in self.sampled:
                    pending = [
                        f"{c.get('type')}={c.get('status')}:{c.get('reason')}"
                        for c in status.get("conditions", [])
                        if c.get("status") != "True"
                    ]
                    entry = (at, str(seen.phase), pending)
                    if not seen.history or seen.history[-1][1:] != entry[1:]:
                        seen.history.append(entry)
            self.changed.notify_all()

    def wait(
        self, what: str, done: Callable[[], bool], timeout: float, progress: Callable[[], str]
    ) -> bool:
        """Until ``done()`` (called with the lock held); a progress line every 15 s."""
        deadline = time.monotonic() + timeout
        said = time.monotonic()
        with self.changed:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    say(f"  timed out waiting for {what}: {progress()}")
                    return False
                self.changed.wait(min(left, 1.0))
                if time.monotonic() - said >= 15:
                    said = time.monotonic()
                    say(f"  … {what}: {progress()}")
        return True


# ---------------------------------------------------------------------------- the rig


@dataclass
class Layout:
    vms: int
    plan_vms: int
    vms_per_mt: int
    vms_per_ps: int

    @property
    def master_targets(self) -> int:
        return math.ceil(self.vms / self.vms_per_mt)

    @property
    def process_servers(self) -> int:
        return math.ceil(self.vms / self.vms_per_ps)

    def names(self) -> list[str]:
        width = max(4, len(str(self.vms - 1)))
        return [f"vm-{i:0{width}d}" for i in range(self.vms)]


@dataclass
class FakePlane:
    pid: int
    log: Path
    master_targets: list[str]
    process_servers: list[str]
    stats_client: Https

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.stats_client.ok("GET", "/_fake/stats")
        return answer


def start_fakeplane(root: Path, pki: Pki, layout: Layout) -> FakePlane:
    pair = pki.serving("fakeplane")
    ready = root / "fakeplane.json"
    log = root / "fakeplane.log"
    proc = spawn(
        [
            sys.executable,
            str(HERE / "fakeplane.py"),
            f"--cert={pair.cert}",
            f"--key={pair.key}",
            f"--client-ca={pki.ca_file}",
            f"--master-targets={layout.master_targets}",
            f"--process-servers={layout.process_servers}",
            f"--ready={ready}",
        ],
        log,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(operator_.REPO / "operator")]),
        },
    )
    wait_until(ready.exists, what="fakeplane", log=log, proc=proc, timeout=60)
    described = json.loads(ready.read_text())
    port = int(described["masterTargets"][0].rsplit(":", 1)[1])
    client = Https(port, pki.ca_file, pki.client("bench-stats", "bench"))
    return FakePlane(proc.pid, log, described["masterTargets"], described["processServers"], client)


def vsphere_session(vc: VCenter) -> Any:
    from pyVim.connect import SmartConnect

    return SmartConnect(  # type: ignore[no-untyped-call]
        host=vc.host,
        port=vc.port,
        user=vc.username,
        pwd=vc.password,
        sslContext=vc.ssl_context(),
    )


def create_mt_vm(si: Any, name: str) -> str:
    """A master target VM (disk.EnableUUID on, no disks), as tests/e2e makes one."""
    from pyVmomi import vim

    from failback.adapters.vsphere import operations
    from failback.ports.vsphere import NewVM, VMPlacement

    instance = str(uuid.uuid4())
    spec = NewVM(
        name=name,
        guest_id="otherLinux64Guest",
        placement=VMPlacement(datacenter=DATACENTER, datastore=DATASTORE, host=HOST),
        instance_uuid=instance,
        cpus=1,
        memory_mib=128,
        extra_config={"disk.EnableUUID": "TRUE"},
    )
    started = operations.create_vm(si.content, spec)
    moref = getattr(started, "moref", None)
    if moref is not None:
        task: Any = vim.Task(moref, si._stub)  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 60
        while task.info.state not in ("success", "error"):
            if time.monotonic() > deadline:
                raise TestbedError(f"creating {name} in vcsim took more than 60 s")
            time.sleep(0.05)
    return instance


def objects(
    layout: Layout,
    namespace: str,
    emulator: AzureEmulator,
    vc: VCenter,
    pki: Pki,
    plane: FakePlane,
    mt_vms: Sequence[str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(Secrets, custom objects): the MasterTargets, ProcessServers, ProtectedVMs, plan."""
    operator_pair = pki.client("operator", "failback-operator")
    meta = {"namespace": namespace}
    api = f"{GROUP}/{VERSION}"

    def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, **meta},
                "type": "Opaque", "stringData": data}  # fmt: skip

    secrets = [
        secret("vcenter", {"server": f"{vc.host}:{vc.port}", "username": vc.username,
                           "password": vc.password, "caBundle": vc.ca_file.read_text()}),
        secret("azure", {"tenantId": emulator.tenant_id, "clientId": emulator.client_id,
                         "clientSecret": emulator.client_secret}),
        secret("dataplane-tls", {"tls.crt": operator_pair.cert.read_text(),
                                 "tls.key": operator_pair.key.read_text(),
                                 "ca.crt": pki.ca_file.read_text()}),
    ]  # fmt: skip
    custom: list[dict[str, Any]] = []
    for i, (endpoint, vm) in enumerate(zip(plane.master_targets, mt_vms, strict=True)):
        custom.append({
            "apiVersion": api, "kind": "MasterTarget", "metadata": {"name": f"mt-{i}", **meta},
            "spec": {"vcenterSecretRef": {"name": "vcenter"}, "vm": {"instanceUUID": vm},
                     "osType": "Linux", "endpoint": endpoint,
                     "tlsSecretRef": {"name": "dataplane-tls"}},
        })  # fmt: skip
    for i, endpoint in enumerate(plane.process_servers):
        custom.append({
            "apiVersion": api, "kind": "ProcessServer", "metadata": {"name": f"ps-{i}", **meta},
            "spec": {"location": "OnPrem", "connectivity": "ExpressRoute", "endpoint": endpoint,
                     "tlsSecretRef": {"name": "dataplane-tls"}},
        })  # fmt: skip
    for i, name in enumerate(layout.names()):
        custom.append(protected_vm(name, namespace, emulator, i, layout))
    members = layout.names()[: layout.plan_vms]
    custom.append({
        "apiVersion": api, "kind": "FailbackPlan", "metadata": {"name": PLAN, **meta},
        "spec": {"activeSite": "Azure", "groups": [{"name": "all", "members": members}],
                 "commit": {"mode": "Automatic"}, "reprotectAfterCommit": False},
    })  # fmt: skip
    return secrets, custom


def protected_vm(
    name: str, namespace: str, emulator: AzureEmulator, index: int, layout: Layout
) -> dict[str, Any]:
    vm_id = (
        f"/subscriptions/{emulator.subscription_id}/resourceGroups/{RESOURCE_GROUP}"
        f"/providers/Microsoft.Compute/virtualMachines/{name}"
    )
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ProtectedVM",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "osType": "Linux",
            "sourceType": "VMware",
            "azure": {"vmId": vm_id, "credentialsSecretRef": {"name": "azure"}},
            "onPrem": {
                "vcenterSecretRef": {"name": "vcenter"},
                "failbackLocation": "Alternate",
                "alternatePlacement": {
                    "datacenter": DATACENTER,
                    "host": HOST,
                    "datastore": DATASTORE,
                },
            },
            "masterTargetRef": {"name": f"mt-{index // layout.vms_per_mt}"},
            "processServerRef": {"name": f"ps-{index // layout.vms_per_ps}"},
        },
    }


def plural_of(kind: str) -> str:
    return {"MasterTarget": "mastertargets", "ProcessServer": "processservers",
            "ProtectedVM": "protectedvms", "FailbackPlan": "failbackplans"}[kind]  # fmt: skip


def create_all(api: Api, namespace: str, docs: Sequence[dict[str, Any]]) -> float:
    """Create ``docs`` one after another with the admin's client; seconds taken."""
    from kubernetes import client

    core = client.CoreV1Api(api.client())
    custom = api.custom()
    started = time.perf_counter()
    for doc in docs:
        body: Any = doc
        if doc["kind"] == "Secret":
            core.create_namespaced_secret(namespace, body)
            api.own["POST secrets"] += 1
        else:
            plural = plural_of(doc["kind"])
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
            api.own[f"POST {plural}"] += 1
    return time.perf_counter() - started


# ---------------------------------------------------------------------------- phases


@dataclass
class Probe:
    """CPU, memory, API writes and data-plane calls at one moment."""

    at: float
    cpu: dict[str, float]
    writes: Counter[str]
    own: Counter[str]
    plane: dict[str, Any]
    memory: dict[str, int]


@dataclass
class Bench:
    args: argparse.Namespace
    layout: Layout
    root: Path
    kube: Kube
    api: Api
    watcher: Watcher
    plane: FakePlane
    pids: dict[str, int]
    workload: list[dict[str, Any]]
    """The ProtectedVMs and the plan, created once the operator runs."""
    operator_pid: int = 0
    results: dict[str, Any] = field(default_factory=dict)

    def probe(self) -> Probe:
        pids = {**self.pids, "operator": self.operator_pid} if self.operator_pid else self.pids
        return Probe(
            time.monotonic(),
            {name: cpu_seconds(pid) for name, pid in pids.items()},
            api_writes(self.kube),
            Counter(self.api.own),
            self.plane.stats(),
            memory(self.operator_pid) if self.operator_pid else {},
        )

    def phase(self, name: str, before: Probe, after: Probe, objects: int) -> dict[str, Any]:
        """Writes, calls and CPU between two probes; per object over ``objects``."""
        seconds = after.at - before.at
        own = after.own.copy()
        own.subtract(before.own)
        writes = minus(after.writes, before.writes, own)
        calls = Counter(after.plane["requests"])
        calls.subtract(Counter(before.plane["requests"]))
        calls = Counter({k: v for k, v in calls.items() if v > 0})
        cpu = {k: round(after.cpu[k] - before.cpu.get(k, 0.0), 1) for k in after.cpu}
        total = sum(writes.values())
        figures = {
            "seconds": round(seconds, 2),
            "objects": objects,
            "operatorWrites": dict(sorted(writes.items())),
            "operatorWritesTotal": total,
            "writesPerObject": round(total / objects, 2) if objects else None,
            "dataPlaneCalls": dict(sorted(calls.items())),
            "dataPlaneCallsPerObject": (
                round(sum(calls.values()) / objects, 2) if objects else None
            ),
            "passes": sum(v for k, v in calls.items() if k.startswith("ps GET /v1/sessions/")),
            "cpuSeconds": cpu,
            "operatorRss": after.memory.get("VmRSS"),
            "operatorPeakRss": after.memory.get("VmHWM"),
        }
        self.results[name] = figures
        return figures


PACED = """\
import functools, sys
from failback import cli, settings
reads = float(sys.argv.pop(1))
def paced(**given):
    return settings.Settings(**{"azure_reads_per_hour": reads,
                                "azure_read_burst": max(1000, int(reads / 10)), **given})
cli.Settings = paced
sys.exit(cli.main(sys.argv[1:]))
"""
"""``failback operator`` with another client-side pace of ARM reads (``--azure-reads-per-hour``
of this benchmark; the product has no flag for it): a wrapper that replaces the defaults of
``Settings.azure_reads_per_hour`` and ``azure_read_burst``, and nothing else."""


def run_operator(bench: Bench, emulator: AzureEmulator) -> None:
    """``failback operator`` as a process with its ServiceAccount's token (what the
    manifests' RBAC grants), as ``testbed.operator.start`` starts it."""
    args = bench.args
    operator_.install_into(bench_kubectl(bench), NAMESPACE)
    workdir = bench.root / "operator"
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = service_account_kubeconfig(
        bench.kube, NAMESPACE, operator_.ACCOUNT, workdir / "operator.kubeconfig",
        expiration_seconds=86400,
    )  # fmt: skip
    if args.azure_reads_per_hour is None:
        command = [str(Path(sys.executable).parent / "failback")]
    else:
        command = [sys.executable, "-c", PACED, f"{args.azure_reads_per_hour:g}"]
    log = workdir / "operator.log"
    proc = spawn(
        [
            *command,
            "operator",
            f"--namespace={NAMESPACE}",
            f"--recheck-interval={args.recheck_interval:g}",
            f"--recheck-idle={args.recheck_idle:g}",
            f"--replication-interval={args.replication_interval:g}",
            "--log-format=json",
            f"--azure-arm-endpoint={emulator.arm_url}",
            f"--azure-authority={emulator.authority}",
            f"--azure-ca-file={emulator.ca_file}",
        ],
        log,
        env={"KUBECONFIG": str(kubeconfig), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
             "HOME": str(workdir)},
    )  # fmt: skip
    bench.operator_pid = proc.pid
    bench.results["operatorLog"] = str(log)


def bench_kubectl(bench: Bench) -> Tool:
    return Tool(build.require().kubectl, bench.kube.kubeconfig, bench.root / "tools-home")


def settle(bench: Bench, timeout: float = 180.0) -> int:
    """Until the operator reconciled every MasterTarget and ProcessServer once; then its
    RSS with no ProtectedVM (bytes)."""
    custom = bench.api.custom()
    deadline = time.monotonic() + timeout
    for plural in ("mastertargets", "processservers"):
        while True:
            items = custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural)
            if all((i.get("status") or {}).get("conditions") for i in items["items"]):
                break
            if time.monotonic() > deadline:
                raise TestbedError(f"the operator did not reconcile the {plural} in {timeout:g} s")
            time.sleep(0.5)
    time.sleep(3.0)
    return memory(bench.operator_pid).get("VmRSS", 0)


def converge(bench: Bench) -> None:
    w, n = bench.watcher, bench.layout.vms
    say(f"converge: {n} ProtectedVMs and the plan created, one after another, for the operator")
    before = bench.probe()
    started = before.at
    bench.results["createSeconds"] = round(create_all(bench.api, NAMESPACE, bench.workload), 3)

    def done() -> bool:
        return sum(1 for s in w.vms.values() if s.protected_at is not None) >= n

    def progress() -> str:
        count = sum(1 for s in w.vms.values() if s.protected_at is not None)
        phases = Counter(s.phase or "none" for s in w.vms.values())
        rss = memory(bench.operator_pid).get("VmRSS", 0) >> 20
        return f"{count}/{n} Protected; phases {dict(phases)}; operator RSS {rss} MiB"

    ok = w.wait("every ProtectedVM Protected", done, bench.args.converge_timeout, progress)
    after = bench.probe()
    figures = bench.phase("converge", before, after, n)
    with w.lock:
        times = [s.protected_at - started for s in w.vms.values() if s.protected_at is not None]
    with w.lock:
        figures["sampled"] = {
            name: [(round(at - started, 1), phase, pending) for at, phase, pending in seen.history]
            for name, seen in w.vms.items()
            if seen.history
        }
    figures.update(
        complete=ok,
        protected=len(times),
        p50=pct(times, 50),
        p99=pct(times, 99),
        last=max(times) if times else None,
        perObject=(max(times) / len(times)) if times else None,
    )


def steady(bench: Bench) -> None:
    seconds = bench.args.steady
    say(f"steady state: {seconds:g} s with nothing changing")
    before = bench.probe()
    time.sleep(seconds)
    after = bench.probe()
    figures = bench.phase("steady", before, after, bench.layout.vms)
    minutes = figures["seconds"] / 60
    figures["writesPerObjectPerMinute"] = round(
        figures["operatorWritesTotal"] / bench.layout.vms / minutes, 3
    )
    figures["passesPerObjectPerMinute"] = round(figures["passes"] / bench.layout.vms / minutes, 3)
    figures["operatorCpuPercent"] = round(
        100 * figures["cpuSeconds"]["operator"] / figures["seconds"], 1
    )


def change_spec(bench: Bench, names: Sequence[str], value: str) -> dict[str, tuple[float, int]]:
    """Patch ``spec.policy.rpoThreshold`` of ``names``: {name: (sent at, new generation)}."""
    custom = bench.api.custom()
    sent = {}
    for name in names:
        at = time.monotonic()
        got = custom.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "protectedvms", name,
            {"spec": {"policy": {"rpoThreshold": value}}},
        )  # fmt: skip
        bench.api.own["PATCH protectedvms"] += 1
        sent[name] = (at, int(got["metadata"]["generation"]))
    return sent


def latencies(
    bench: Bench, sent: dict[str, tuple[float, int]], timeout: float
) -> tuple[list[float], list[float]]:
    """(spec → status caught up, spec → the watch delivered the spec change), seconds."""
    w = bench.watcher

    def done() -> bool:
        return all(w.vms[n].observed >= g for n, (_, g) in sent.items())

    def progress() -> str:
        behind = sum(1 for n, (_, g) in sent.items() if w.vms[n].observed < g)
        return f"{behind}/{len(sent)} statuses behind their spec"

    w.wait("status.observedGeneration", done, timeout, progress)
    status, spec = [], []
    with w.lock:
        for name, (at, gen) in sent.items():
            seen = w.vms[name]
            caught = [t for g, t in seen.observed_at.items() if g >= gen]
            if caught:
                status.append(min(caught) - at)
            if gen in seen.generation_at:
                spec.append(seen.generation_at[gen] - at)
    return status, spec


def spec_changes(bench: Bench) -> None:
    names = bench.layout.names()
    k = min(bench.args.changes, len(names))
    burst = names[-k:]  # outside the plan where possible: its members are not touched later
    say(f"spec → status: rpoThreshold changed on {k} ProtectedVMs at once")
    before = bench.probe()
    sent = change_spec(bench, burst, "20m")
    status, spec = latencies(bench, sent, bench.args.change_timeout)
    after = bench.probe()
    figures = bench.phase("specBurst", before, after, k)
    figures.update(
        caughtUp=len(status),
        p50=pct(status, 50), p99=pct(status, 99),
        watchP50=pct(spec, 50), watchP99=pct(spec, 99),
    )  # fmt: skip
    say(f"spec → status: {ISOLATED_CHANGES} changes one at a time")
    isolated, floor = [], []
    before = bench.probe()
    for name in names[-k - ISOLATED_CHANGES : -k] or names[:ISOLATED_CHANGES]:
        s, f = latencies(bench, change_spec(bench, [name], "25m"), bench.args.change_timeout)
        isolated += s
        floor += f
    after = bench.probe()
    figures = bench.phase("specIsolated", before, after, ISOLATED_CHANGES)
    figures.update(
        caughtUp=len(isolated),
        p50=pct(isolated, 50), max=max(isolated, default=None),
        watchP50=pct(floor, 50), watchMax=max(floor, default=None),
    )  # fmt: skip


def failback(bench: Bench) -> None:
    m = bench.layout.plan_vms
    say(f"failback: the plan of {m} VMs flips to OnPrem")
    w = bench.watcher
    before = bench.probe()
    bench.api.custom().patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "failbackplans", PLAN, {"spec": {"activeSite": "OnPrem"}}
    )
    bench.api.own["PATCH failbackplans"] += 1
    started = time.monotonic()

    def done() -> bool:
        phase = (w.plan.get("status") or {}).get("phase")
        return (
            phase in ("Completed", "Failed")
            and bool(w.plan_phases)
            and w.plan_phases[-1][0] > started
        )

    def progress() -> str:
        status = w.plan.get("status") or {}
        steps = Counter(
            f"{s.get('name')}:{s.get('state')}" for s in status.get("steps", []) if s.get("vm")
        )
        done_vms = steps.get("guest-ready:Succeeded", 0)
        at = status.get("currentStep")
        return f"phase {status.get('phase')}, {done_vms}/{m} VMs guest-ready, at {at}"

    ok = w.wait("the plan Completed", done, bench.args.failback_timeout, progress)
    after = bench.probe()
    figures = bench.phase("failback", before, after, m)
    with w.lock:
        plan = copy.deepcopy(w.plan)
        phases = [(round(t - started, 2), p) for t, p in w.plan_phases if t >= started]
    status = plan.get("status") or {}
    ends = _vm_done_seconds(status.get("steps", []))
    total = phases[-1][0] if phases else None
    figures.update(
        complete=ok and status.get("phase") == "Completed",
        phase=status.get("phase"),
        phases=phases,
        seconds=total,
        perVm=(total / m) if total else None,
        vmP50=pct(ends, 50),
        vmP99=pct(ends, 99),
        failedSteps=[s for s in status.get("steps", []) if s.get("state") == "Failed"][:5],
    )


def _vm_done_seconds(steps: Sequence[dict[str, Any]]) -> list[float]:
    """Per VM: seconds from the run's first step to its guest-ready step's end."""
    from failback.api import parse_time

    starts = [parse_time(s["startTime"]) for s in steps if s.get("startTime")]
    if not starts:
        return []
    first = min(starts)
    return [
        (parse_time(s["endTime"]) - first).total_seconds()
        for s in steps
        if s.get("name") == "guest-ready" and s.get("endTime") and s.get("vm")
    ]


def baseline(bench: Bench, status: dict[str, Any]) -> None:
    """The same number of plain writes, one after another, with nothing else running:
    ``--vms`` creates, then one status PATCH each with ``status`` (an operator's)."""
    from kubernetes import client

    n = bench.layout.vms
    say(f"baseline: {n} creates and {n} status patches, one after another")
    core = client.CoreV1Api(bench.api.client())
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=BASELINE_NAMESPACE)))
    docs = [
        {**protected_vm(name, BASELINE_NAMESPACE, bench.results["_emulator"], i, bench.layout)}
        for i, name in enumerate(bench.layout.names())
    ]
    create = create_all(bench.api, BASELINE_NAMESPACE, docs)
    custom = bench.api.custom()
    started = time.perf_counter()
    for doc in docs:
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, BASELINE_NAMESPACE, "protectedvms", doc["metadata"]["name"],
            {"status": status},
        )  # fmt: skip
    patch = time.perf_counter() - started
    bench.results["baseline"] = {
        "creates": n,
        "createSeconds": round(create, 3),
        "statusPatches": n,
        "statusPatchSeconds": round(patch, 3),
        "statusPatchPerObject": patch / n,
        "statusBytes": len(json.dumps(status)),
    }


# ---------------------------------------------------------------------------- report


def report(bench: Bench) -> None:
    r, layout = bench.results, bench.layout
    floor = r.get("baseline", {}).get("statusPatchPerObject")

    def ratio(seconds: float | None, objects: int = 1) -> str:
        """``seconds`` over the baseline's time for ``objects`` plain status patches."""
        if seconds is None or not floor:
            return "-"
        return f"{seconds / (floor * objects):,.1f}x"

    say("")
    say(
        f"control plane: {layout.vms} ProtectedVMs on {layout.master_targets} master targets "
        f"and {layout.process_servers} process servers (fake), a plan of {layout.plan_vms}; "
        f"--recheck-interval {bench.args.recheck_interval:g} --recheck-idle "
        f"{bench.args.recheck_idle:g} --replication-interval {bench.args.replication_interval:g}"
    )
    if bench.args.azure_reads_per_hour is not None:
        say(f"the operator's ARM reads paced at {bench.args.azure_reads_per_hour:g} an hour")
    b = r.get("baseline", {})
    say(
        f"baseline (plain API writes, one after another, operator stopped): "
        f"{b.get('creates')} creates {fmt(b.get('createSeconds'))}; {b.get('statusPatches')} "
        f"status patches of {b.get('statusBytes')} bytes {fmt(b.get('statusPatchSeconds'))}, "
        f"{fmt(1000 * floor if floor else None, 'ms', 1)} each"
    )
    say("x baseline: the time over that of as many plain status patches as objects involved")
    c, s, f = r.get("converge", {}), r.get("steady", {}), r.get("failback", {})
    burst, one = r.get("specBurst", {}), r.get("specIsolated", {})
    mem = r.get("memory", {})
    per_vm = ((mem.get("end") or 0) - (mem.get("idle") or 0)) / layout.vms / 1024
    rows: list[tuple[str, str, str]] = [
        (f"converge: all {c.get('protected')}/{layout.vms} Protected", fmt(c.get("last")),
         ratio(c.get("last"), layout.vms)),
        ("converge: per object, amortized", fmt(c.get("perObject"), "s", 3), ""),
        ("converge: one object, p50 / p99",
         f"{fmt(c.get('p50'), '', 1)} / {fmt(c.get('p99'), 's', 1)}", ""),
        ("converge: operator API writes per object", f"{c.get('writesPerObject')}", ""),
        ("converge: data-plane calls per object", f"{c.get('dataPlaneCallsPerObject')}", ""),
        ("steady: passes per object per minute", f"{s.get('passesPerObjectPerMinute')}", ""),
        ("steady: API writes per object per minute", f"{s.get('writesPerObjectPerMinute')}", ""),
        ("steady: operator CPU (of one core)", f"{s.get('operatorCpuPercent')} %", ""),
        (f"spec→status, {burst.get('objects')} at once: p50",
         fmt(burst.get("p50")), ratio(burst.get("p50"))),
        (f"spec→status, {burst.get('objects')} at once: p99",
         fmt(burst.get("p99")), ratio(burst.get("p99"))),
        ("   the same watch delivering the spec: p99", fmt(burst.get("watchP99"), "s", 3), ""),
        (f"spec→status, {one.get('objects')} one at a time: p50",
         fmt(one.get("p50")), ratio(one.get("p50"))),
        (f"spec→status, {one.get('objects')} one at a time: max",
         fmt(one.get("max")), ratio(one.get("max"))),
        (f"failback of {layout.plan_vms} VMs: to {f.get('phase')}", fmt(f.get("seconds")),
         ratio(f.get("seconds"), layout.plan_vms)),
        ("failback: per VM, amortized", fmt(f.get("perVm"), "s", 3), ""),
        ("failback: one VM guest-ready, p50 / p99",
         f"{fmt(f.get('vmP50'), '', 0)} / {fmt(f.get('vmP99'), 's', 0)}", ""),
        ("failback: operator API writes per VM", f"{f.get('writesPerObject')}", ""),
        ("failback: data-plane calls per VM", f"{f.get('dataPlaneCallsPerObject')}", ""),
        ("operator RSS: idle / peak / end",
         f"{(mem.get('idle') or 0) >> 20} / {(mem.get('peak') or 0) >> 20} / "
         f"{(mem.get('end') or 0) >> 20} MiB", ""),
        ("operator RSS per ProtectedVM (end - idle)", f"{per_vm:.0f} KiB", ""),
    ]  # fmt: skip
    say("")
    say(f"{'what':46} {'figure':>16} {'x baseline':>11}")
    for what, figure, times in rows:
        say(f"{what:46} {figure:>16} {times:>11}")
    say("")
    for key in ("converge", "steady", "specBurst", "specIsolated", "failback"):
        x = r.get(key)
        if not x:
            continue
        say(f"{key}: {x['seconds']} s; CPU seconds {x['cpuSeconds']}")
        say(f"  operator writes {x['operatorWrites']}")
        say(f"  data-plane calls {x['dataPlaneCalls']}")
    if f.get("failedSteps"):
        say(f"failed steps: {f['failedSteps']}")


# ---------------------------------------------------------------------------- main


def build_rig(
    args: argparse.Namespace, layout: Layout, root: Path, stack: contextlib.ExitStack
) -> Bench:
    from pyVim.connect import Disconnect

    bins = build.require()
    pki = Pki(root / "pki")
    say(f"test bed in {root}")
    kube = stack.enter_context(start_kube(root / "kube", pki, bins))
    vc = stack.enter_context(start_vcenter(root / "vcenter", pki, bins))
    emulator = stack.enter_context(start_azure_emulator(root / "azure", pki))
    kubectl = Tool(bins.kubectl, kube.kubeconfig, root / "tools-home")
    operator_.install_crds(kubectl)
    api = Api(kube)

    control = emulator.control
    durations = dict.fromkeys(control.limits()["durations"], 1.0)
    control.set_limits(
        durations=durations,
        arm_reads_per_hour=1e9, arm_read_burst=1_000_000,
        arm_writes_per_hour=1e9, arm_write_burst=1_000_000,
    )  # fmt: skip
    control.create_resource_group(RESOURCE_GROUP)
    say(f"Azure: {layout.vms} VMs with one 1 MiB disk each")
    for name in layout.names():
        control.create_vm(RESOURCE_GROUP, name, os_disk_size=MIB)

    say(f"vSphere: {layout.master_targets} master target VMs")
    si = vsphere_session(vc)
    try:
        mt_vms = [create_mt_vm(si, f"mt-{i}") for i in range(layout.master_targets)]
    finally:
        Disconnect(si)  # type: ignore[no-untyped-call]

    plane = start_fakeplane(root, pki, layout)
    stack.callback(stop, plane.pid)

    from kubernetes import client

    client.CoreV1Api(api.client()).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE))
    )
    secrets, custom = objects(layout, NAMESPACE, emulator, vc, pki, plane, mt_vms)
    infra = [d for d in custom if d["kind"] in ("MasterTarget", "ProcessServer")]
    say(f"Kubernetes: {len(secrets)} Secrets and {len(infra)} MasterTargets and ProcessServers")
    create_all(api, NAMESPACE, [*secrets, *infra])
    watcher = Watcher(api, NAMESPACE, sampled=(layout.names()[0], layout.names()[-1]))
    watcher.start()
    stack.callback(watcher.stop)
    pids = {
        "kube-apiserver": kube.apiserver_pid,
        "etcd": kube.etcd_pid,
        "vcsim": vc.pid,
        "emulator": emulator.pid,
        "fakeplane": plane.pid,
        "bench": os.getpid(),
    }
    workload = [d for d in custom if d not in infra]
    bench = Bench(args, layout, root, kube, api, watcher, plane, pids, workload)
    bench.results["_emulator"] = emulator
    return bench


def run(args: argparse.Namespace) -> dict[str, Any]:
    layout = Layout(args.vms, args.plan_vms, args.vms_per_mt, args.vms_per_ps)
    root = Path(tempfile.mkdtemp(prefix="bench-controlplane-"))
    try:
        with contextlib.ExitStack() as stack:
            bench = build_rig(args, layout, root, stack)
            emulator: AzureEmulator = bench.results["_emulator"]
            run_operator(bench, emulator)
            stack.callback(lambda: stop(bench.operator_pid))
            idle = settle(bench)
            try:
                converge(bench)
                save(bench)
                template = _status_of(bench, bench.layout.names()[-1])
                if bench.results["converge"]["complete"]:
                    for phase in (steady, spec_changes, failback):
                        phase(bench)
                        save(bench)
            finally:
                mem = memory(bench.operator_pid)
                bench.results["memory"] = {"idle": idle, "end": mem.get("VmRSS"),
                                           "peak": mem.get("VmHWM")}  # fmt: skip
                stop(bench.operator_pid)
                bench.watcher.stop()
            baseline(bench, template)
            report(bench)
            if not bench.results.get("failback", {}).get("complete"):
                say(f"operator log: {bench.results['operatorLog']}\n"
                    f"{log_tail(Path(bench.results['operatorLog']), 15)}")  # fmt: skip
            save(bench)
            return figures(bench)
    finally:
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def figures(bench: Bench) -> dict[str, Any]:
    out = {k: v for k, v in bench.results.items() if not k.startswith("_")}
    out["layout"] = bench.layout.__dict__
    out["arguments"] = {k: v for k, v in vars(bench.args).items() if k != "json"}
    return out


def save(bench: Bench) -> None:
    """The figures so far into ``--json`` (after each phase: a long run stopped from outside
    keeps what it measured)."""
    if bench.args.json:
        Path(bench.args.json).write_text(json.dumps(figures(bench), indent=2, default=str) + "\n")


def _status_of(bench: Bench, name: str) -> dict[str, Any]:
    got: dict[str, Any] = bench.api.custom().get_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "protectedvms", name
    )
    return dict(got.get("status") or {})


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--vms", type=int, default=1000, help="ProtectedVMs (default 1000)")
    parser.add_argument("--plan-vms", type=int, default=100, help="of them in the plan (≤ 100)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 50 VMs, a plan of 10")
    parser.add_argument("--vms-per-mt", type=int, default=50, help="disks per master target (≤ 60)")
    parser.add_argument("--vms-per-ps", type=int, default=250, help="sessions per process server")
    parser.add_argument("--changes", type=int, default=100, help="spec changes in the burst")
    parser.add_argument("--recheck-interval", type=float, default=10.0)
    parser.add_argument("--recheck-idle", type=float, default=2.0)
    parser.add_argument("--replication-interval", type=float, default=60.0)
    parser.add_argument("--steady", type=float, default=180.0, help="seconds of steady state")
    parser.add_argument(
        "--azure-reads-per-hour",
        type=float,
        metavar="N",
        help="start the operator with this client-side pace of ARM reads instead of its "
        "default (10,000 per hour: Azure's legacy limit is 12,000); shows what the control "
        "plane does when Azure's read budget is not what limits it",
    )
    parser.add_argument("--converge-timeout", type=float, default=7200.0)
    parser.add_argument("--change-timeout", type=float, default=900.0)
    parser.add_argument("--failback-timeout", type=float, default=3600.0)
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (logs)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.vms, args.plan_vms, args.changes, args.steady = 50, 10, 20, 60.0
    if not 1 <= args.plan_vms <= min(100, args.vms):
        parser.error("--plan-vms must be 1 to 100, and at most --vms (a plan holds 100 VMs)")
    if not 1 <= args.vms_per_mt <= 60:
        parser.error("--vms-per-mt must be 1 to 60: a master target VM takes 60 disks")
    if args.changes + ISOLATED_CHANGES > args.vms:
        args.changes = max(1, args.vms - ISOLATED_CHANGES)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
