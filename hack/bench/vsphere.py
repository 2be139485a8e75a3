"""Benchmark: checking 1,000 ProtectedVMs against one vCenter costs O(1) round trips per pass.

Starts its own vcsim (over TLS, signed by a throwaway CA) with 1,000 VMs, then in the
same run measures

- the **baseline**: one PropertyCollector ``RetrieveContents`` of the whole inventory
  (every VM, host and datastore with the same fixed property lists the adapter reads);
- a **pass**: the on-premises preflight of 1,000 ProtectedVMs (each failing back into its
  own original VM, all through one MasterTarget) plus that MasterTarget's check, through
  the operator's own session cache, counting every SOAP request on the wire;
- for contrast, the **per-VM** way (find by UUID, then read the VM) on a sample.

It prints calls per VM and times relative to the baseline. Run:

    PYTHONPATH=operator:hack .venv/bin/python hack/bench/vsphere.py [--vms 1000] [--passes 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import ssl
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from failback.adapters.vsphere import Sessions, inventory
from failback.api import mastertarget, protectedvm
from failback.domain.vsphere import parse_vcenter_secret
from failback.services import mastertarget as mt_service
from failback.services.onprem_preflight import onprem_preflight
from testbed import build
from testbed.pki import Pki
from testbed.procs import free_port, spawn, stop, wait_until

NOW = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
USER = "bench"


class DictSecrets:
    """The Secrets port over a dict (the benchmark measures vCenter, not Kubernetes)."""

    def __init__(self, data: Mapping[str, Mapping[str, str]]) -> None:
        self._data = data

    async def read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self._data.get(name)


def start_vcsim(workdir: Path, vms: int) -> tuple[int, int, str, Path]:
    """vcsim with ``vms`` VMs (half on a standalone host, half in a cluster)."""
    pki = Pki(workdir / "pki")
    cert = pki.serving("vcsim", ("127.0.0.1", "localhost"))
    port = free_port()
    password = "bench-" + os.urandom(6).hex()
    pw_file = workdir / "password"
    pw_file.write_text(password)
    (workdir / "ds").mkdir()
    log = workdir / "vcsim.log"
    proc = spawn(
        [
            str(build.require().vcsim),
            f"-l=127.0.0.1:{port}",
            f"-tlscert={cert.cert}",
            f"-tlskey={cert.key}",
            f"-username={USER}",
            f"-password={pw_file}",
            "-dc=1",
            "-cluster=1",
            "-host=3",
            "-standalone-host=1",
            "-ds=2",
            f"-vm={vms // 2}",
        ],
        log,
        env={**os.environ, "TMPDIR": str(workdir / "ds")},
    )
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))

    def ready() -> bool:
        url = f"https://127.0.0.1:{port}/about"
        with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
            return bool(resp.status == 200)

    wait_until(ready, what="vcsim", log=log, proc=proc, timeout=300)
    return proc.pid, port, password, pki.ca_file


def baseline(si: Any) -> tuple[float, int]:
    """Seconds for one RetrieveContents of the whole inventory, and the objects read."""
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(
        content.rootFolder, [vim.VirtualMachine, vim.HostSystem, vim.Datastore], True
    )
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[
            vmodl.query.PropertyCollector.ObjectSpec(
                obj=view,
                skip=True,
                selectSet=[
                    vmodl.query.PropertyCollector.TraversalSpec(
                        name="v", type=vim.view.ContainerView, path="view", skip=False
                    )
                ],
            )
        ],
        propSet=[
            vmodl.query.PropertyCollector.PropertySpec(
                type=t, pathSet=list(inventory.PROPERTIES[t])
            )
            for t in (vim.VirtualMachine, vim.HostSystem, vim.Datastore)
        ],
    )
    started = time.perf_counter()
    objects = content.propertyCollector.RetrieveContents([spec])
    elapsed = time.perf_counter() - started
    view.Destroy()
    return elapsed, len(objects)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--sample", type=int, default=50, help="VMs read the per-VM way")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-vsphere-") as tmp:
        started = time.perf_counter()
        pid, port, password, ca_file = start_vcsim(Path(tmp), args.vms)
        print(f"vcsim with {args.vms} VMs up in {time.perf_counter() - started:.1f}s")
        try:
            await run(args, port, password, ca_file, ca_file.read_text())
        finally:
            stop(pid)


async def run(
    args: argparse.Namespace, port: int, password: str, ca_file: Path, ca_text: str
) -> None:
    si = SmartConnect(
        host="127.0.0.1",
        port=port,
        user=USER,
        pwd=password,
        sslContext=ssl.create_default_context(cafile=str(ca_file)),
    )
    try:
        base_times = [baseline(si) for _ in range(args.passes)]
    finally:
        Disconnect(si)
    base = min(t for t, _ in base_times)
    print(f"baseline: one RetrieveContents of {base_times[0][1]} objects: {base * 1000:.1f} ms")

    secret = {
        "server": f"127.0.0.1:{port}",
        "username": USER,
        "password": password,
        "caBundle": ca_text,
    }
    # The same credentials the services will read from the Secret: one cached session.
    creds = parse_vcenter_secret(secret)
    secrets = DictSecrets(
        {"vcenter": secret, "mt-tls": {"tls.crt": "c", "tls.key": "k", "ca.crt": "a"}}
    )
    cache = Sessions(inventory_max_age=3600)
    try:
        client = await cache.connect(creds)
        inv = await client.inventory(max_age=0)
        uuids = [v.instance_uuid for v in inv.vms]
        mt_uuid, vm_uuids = uuids[0], uuids[1 : args.vms + 1]
        mt = mastertarget.parse(
            {
                "metadata": {"name": "mt", "namespace": "b", "uid": "u", "generation": 1},
                "spec": {
                    "vcenterSecretRef": {"name": "vcenter"},
                    "vm": {"instanceUUID": mt_uuid},
                    "osType": "Linux",
                    "endpoint": "https://mt:9443",
                    "tlsSecretRef": {"name": "mt-tls"},
                },
            }
        )
        vms = [
            protectedvm.parse(
                {
                    "metadata": {"name": f"vm-{i}", "namespace": "b", "uid": "u", "generation": 1},
                    "spec": {
                        "azure": {
                            "vmId": "/subscriptions/0b9e3a5c-1d2f-4e6a-8b7c-9d0e1f2a3b4c/"
                            f"resourceGroups/dr/providers/Microsoft.Compute/virtualMachines/v{i}",
                            "credentialsSecretRef": {"name": "azure"},
                        },
                        "onPrem": {
                            "vcenterSecretRef": {"name": "vcenter"},
                            "originalVM": {"instanceUUID": u},
                        },
                        "osType": "Linux",
                        "masterTargetRef": {"name": "mt"},
                        "processServerRef": {"name": "ps"},
                    },
                }
            )
            for i, u in enumerate(vm_uuids)
        ]
        before = client.wire_calls()
        times = []
        for _ in range(args.passes):
            client.invalidate()  # every pass reads vCenter afresh
            t0 = time.perf_counter()
            results = await asyncio.gather(
                *(onprem_preflight(v, mt, secrets, cache, NOW) for v in vms),
                mt_service.reconcile(mt, secrets, cache, NOW),
            )
            times.append(time.perf_counter() - t0)
        located = sum(1 for r in results[:-1] if getattr(r, "location", None) is not None)
        assert cache.clients() == [client], "every object shares the one session"
        calls = client.wire_calls() - before
        per_pass = sum(calls.values()) / args.passes
        best = min(times)
        print(
            f"pass: {len(vms)} ProtectedVMs + 1 MasterTarget, {located} located: "
            f"{best * 1000:.1f} ms = {best / base:.1f}x the baseline; "
            f"{per_pass:.0f} vCenter calls per pass = {per_pass / len(vms):.4f} per VM "
            f"({dict(calls)})"
        )

        sample = vm_uuids[: args.sample]
        before = client.wire_calls()
        t0 = time.perf_counter()
        for u in sample:
            await client.vm(u)
        naive = time.perf_counter() - t0
        naive_calls = sum((client.wire_calls() - before).values()) / len(sample)
        print(
            f"per-VM reads (sample of {len(sample)}): {naive_calls:.1f} calls per VM, "
            f"{naive / len(sample) * len(vms) * 1000:.0f} ms extrapolated to {len(vms)} VMs "
            f"= {naive / len(sample) * len(vms) / base:.1f}x the baseline"
        )
    finally:
        await cache.close()


if __name__ == "__main__":
    asyncio.run(main())
