"""Benchmark: ARM requests per disk per replication cycle, and 429s under the legacy limit.

Starts its own Azure emulator (over TLS, signed by a throwaway CA) enforcing Azure's
legacy ARM limit of 1,200 writes per hour per principal and subscription, on a clock
compressed ``--time-scale`` times, with ``--disks`` managed disks. Each replication cycle
of a disk (the Azure → on-premises source side) is:

1. create an incremental snapshot (write), poll it once after ``Retry-After`` (read);
2. grant read access to it (write), poll once and fetch the SAS (two reads);
3. (the process server reads the changed pages through the SAS: blob requests, not ARM);
4. revoke access (write) and delete the previous cycle's snapshot (write).

Two clients run the same cycles, one after the other, in the same run:

- the **baseline**: the SDK used plainly (``await poller.result()``, its own retries and
  polling, no pacing);
- **ours**: the operator's adapter (one poll after ``Retry-After``, no final GET it does
  not need, a client-side token bucket per principal below the ARM limit).

It prints ARM writes and reads per disk per cycle, the 429s the emulator sent, and how
long a cycle of every disk took (emulated minutes), each with ours/baseline ratios. Run:

    PYTHONPATH=operator:hack .venv/bin/python -m bench.azure [--disks 100] [--cycles 4]

(``python hack/bench/azure.py`` works too: this file's folder is then taken off
``sys.path`` first, or its name would hide the ``azure`` package.)
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from azure.identity.aio import ClientSecretCredential
from azure.mgmt.compute.aio import ComputeManagementClient

from failback.adapters.azure.clients import AzureClientsAdapter, AzureOptions
from failback.adapters.azure.compute import Compute
from failback.ports.azure import AzureThrottled, ClientSecret, OperationHandle
from testbed.azure.process import AzureEmulator, start_azure_emulator
from testbed.pki import Pki

RG = "rg-bench"
MIB = 1 << 20
CYCLE_SECONDS = 300.0
"""The replication cycle: 5 emulated minutes."""
LEGACY_WRITES_PER_HOUR = 1200.0
OUR_WRITES_PER_HOUR = 1100.0
"""The operator's pace: below the limit, leaving room for other tools."""


def emulated_now(emu: AzureEmulator) -> float:
    now: float = emu.control.clock()["now"]
    return now


async def paced(call: Callable[[], Awaitable[OperationHandle]]) -> OperationHandle:
    """``call()``, waiting out the client-side pacing (what a reconcile's retry does)."""
    while True:
        try:
            return await call()
        except AzureThrottled as exc:
            await asyncio.sleep(exc.delay)


async def settle(az: Compute, handle: OperationHandle) -> str | None:
    """Wait ``Retry-After``, then poll (once, if the operation kept its word)."""
    await asyncio.sleep(handle.retry_after or 0.2)
    while True:
        status = await az.poll(handle)
        if status.done:
            return status.result
        await asyncio.sleep(0.2)


async def our_cycle(az: Compute, disk: str, cycle: int, disk_json: Any) -> None:
    snap = f"{disk}-c{cycle}"
    await settle(az, await paced(lambda: az.begin_snapshot_create(RG, snap, disk_json, {})))
    grant = await paced(
        lambda: az.begin_grant_access(RG, snap, snapshot=True, write=False, seconds=3600)
    )
    sas = await settle(az, grant)
    assert sas is not None
    assert "sig=" in sas
    await paced(lambda: az.begin_revoke_access(RG, snap, snapshot=True))
    if cycle > 0:
        await paced(lambda: az.begin_snapshot_delete(RG, f"{disk}-c{cycle - 1}"))


async def baseline_cycle(client: ComputeManagementClient, disk: Any, cycle: int) -> None:
    snap = f"{disk['name']}-c{cycle}"
    body = {
        "location": disk["location"],
        "properties": {
            "incremental": True,
            "creationData": {"createOption": "Copy", "sourceResourceId": disk["id"]},
        },
    }
    await (await client.snapshots.begin_create_or_update(RG, snap, body)).result()  # type: ignore[call-overload]
    access = {"access": "Read", "durationInSeconds": 3600}
    uri = await (await client.snapshots.begin_grant_access(RG, snap, access)).result()  # type: ignore[call-overload]
    assert uri is not None
    await (await client.snapshots.begin_revoke_access(RG, snap)).result()
    if cycle > 0:
        await (await client.snapshots.begin_delete(RG, f"{disk['name']}-c{cycle - 1}")).result()


async def run_cycles(
    emu: AzureEmulator,
    disks: list[str],
    cycles: int,
    one: Callable[[str, int], Awaitable[None]],
    parallel: int,
) -> dict[str, Any]:
    """Every disk through ``cycles`` cycles, a cycle starting every 5 emulated minutes
    (or when the previous one of that disk ends, if later)."""
    control = emu.control
    control.reset_stats()
    started = emulated_now(emu)
    gate = asyncio.Semaphore(parallel)
    cycle_lengths: list[float] = []

    async def disk_loop(disk: str) -> None:
        for cycle in range(cycles):
            due = started + cycle * CYCLE_SECONDS
            while emulated_now_cached[0] < due:  # noqa: ASYNC110 - the emulated clock
                await asyncio.sleep(0.05)
            begin = emulated_now_cached[0]
            async with gate:
                await one(disk, cycle)
            cycle_lengths.append(emulated_now_cached[0] - begin)

    emulated_now_cached = [started]

    async def tick() -> None:
        while True:
            emulated_now_cached[0] = await asyncio.to_thread(emulated_now, emu)
            await asyncio.sleep(0.05)

    ticker = asyncio.create_task(tick())
    real = time.monotonic()
    try:
        await asyncio.gather(*(disk_loop(d) for d in disks))
    finally:
        ticker.cancel()
    elapsed_real = time.monotonic() - real
    stats = control.stats()
    per = len(disks) * cycles
    ok_writes = sum(
        count
        for status, count in stats["responses_by_route"].get("arm_write", {}).items()
        if status.startswith("2")
    )
    return {
        "arm_writes": stats["requests"]["arm_write"],
        "arm_reads": stats["requests"]["arm_read"] + stats["requests"]["arm_poll"],
        "accepted_writes": ok_writes,
        "writes_per_disk_cycle": stats["requests"]["arm_write"] / per,
        "reads_per_disk_cycle": (stats["requests"]["arm_read"] + stats["requests"]["arm_poll"])
        / per,
        "throttled_429": stats["throttled"],
        "mean_cycle_minutes": sum(cycle_lengths) / len(cycle_lengths) / 60,
        "max_cycle_minutes": max(cycle_lengths) / 60,
        "emulated_minutes": (emulated_now(emu) - started) / 60,
        "real_seconds": elapsed_real,
        "writes_by_operation": stats["arm_writes_by_operation"],
    }


def prepare(emu: AzureEmulator, disks: int, scale: float, burst: int) -> list[str]:
    control = emu.control
    control.reset()
    control.set_time_scale(scale)
    control.set_limits(
        arm_writes_per_hour=LEGACY_WRITES_PER_HOUR,
        arm_write_burst=burst,
        # A token lives an emulated day: on a compressed clock an hour is seconds, and
        # the baseline SDK has no answer to a token expiring mid-poll.
        token_lifetime_seconds=86400.0,
        durations={"snapshots/create": 10, "snapshots/beginGetAccess": 5},
    )
    control.create_resource_group(RG)
    names = [f"disk-{i:03d}" for i in range(disks)]
    for name in names:
        control.create_disk(RG, name, MIB)
    return names


async def bench(emu: AzureEmulator, args: argparse.Namespace) -> dict[str, Any]:
    ident = ClientSecret(emu.tenant_id, emu.client_id, emu.client_secret)
    # Baseline: the SDK as it comes.
    names = prepare(emu, args.disks, args.time_scale, args.burst)
    async with (
        ClientSecretCredential(
            emu.tenant_id, emu.client_id, emu.client_secret, **emu.credential_kwargs()
        ) as cred,
        ComputeManagementClient(
            cred, emu.subscription_id, polling_interval=1, **emu.arm_client_kwargs()
        ) as client,
    ):
        disks = {d.name: d.as_dict() async for d in client.disks.list_by_resource_group(RG)}
        disks = {n: {**d, "name": n} for n, d in disks.items()}

        async def base_one(disk: str, cycle: int) -> None:
            await baseline_cycle(client, disks[disk], cycle)

        baseline = await run_cycles(emu, names, args.cycles, base_one, args.parallel)

    # Ours: the operator's adapter, paced at 1,100 writes per emulated hour.
    names = prepare(emu, args.disks, args.time_scale, args.burst)
    options = AzureOptions(
        arm_endpoint=emu.arm_url,
        authority=emu.authority,
        ca_file=str(emu.ca_file),
        federated_token_file=None,
        poll_interval=1.0,
        max_inline_wait=1.0,
        # The client's bucket runs on real time: compress its hour like the emulator's.
        writes_per_hour=OUR_WRITES_PER_HOUR * args.time_scale,
        write_burst=args.burst // 2,
        reads_per_hour=10000.0 * args.time_scale,
        read_burst=1000,
    )
    adapter = AzureClientsAdapter(options)
    try:
        az = await adapter.compute(ident, emu.subscription_id)
        infos = {d.name: d for d in await az.list_disks(RG)}

        async def our_one(disk: str, cycle: int) -> None:
            await our_cycle(az, disk, cycle, infos[disk])

        ours = await run_cycles(emu, names, args.cycles, our_one, args.parallel)
    finally:
        await adapter.close()
    return {"disks": args.disks, "cycles": args.cycles, "baseline": baseline, "ours": ours}


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else ("0" if not a else "inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--disks", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=4)
    parser.add_argument("--time-scale", type=float, default=120.0)
    parser.add_argument(
        "--burst",
        type=int,
        default=100,
        help="the emulator's write bucket (a full 1,200 would hide the steady state "
        "of a short run)",
    )
    parser.add_argument("--parallel", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-azure-") as tmp:
        work = Path(tmp)
        with start_azure_emulator(work / "azure", Pki(work / "pki"), time_scale=1.0) as emu:
            result = asyncio.run(bench(emu, args))
    base, ours = result["baseline"], result["ours"]
    rows = [
        ("ARM writes / disk / cycle", "writes_per_disk_cycle"),
        ("ARM reads / disk / cycle", "reads_per_disk_cycle"),
        ("429s sent by ARM", "throttled_429"),
        ("mean cycle (emulated min)", "mean_cycle_minutes"),
        ("longest cycle (emulated min)", "max_cycle_minutes"),
    ]
    print(
        f"{result['disks']} disks, {result['cycles']} cycles of 5 min, ARM limit "
        f"{LEGACY_WRITES_PER_HOUR:.0f} writes/h (time x{args.time_scale:g}, bucket {args.burst})"
    )
    print(f"{'':32} {'baseline':>10} {'ours':>10} {'ours/base':>10}")
    for label, key in rows:
        print(f"{label:32} {base[key]:>10.2f} {ours[key]:>10.2f} {ratio(ours[key], base[key]):>10}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
