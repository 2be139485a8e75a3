"""A fast fake of the data plane behind its real control APIs, for control-plane benchmarks.

One process (one event loop) plays ``--master-targets`` master targets and
``--process-servers`` process servers, each on its own loopback port, over mutual TLS with
the real services' context (:func:`failback.dataplane.httpkit.server_context`: TLS 1.2+,
only clients whose certificate ``--client-ca`` signed). They answer exactly the routes the
operator calls, with the shapes of ``docs/processserver-api.md`` and
``docs/master-target-api.md`` (the operator's strict parsers read them), and move no bytes:

- process server: ``GET /v1/health``, ``GET /v1/sessions``, ``PUT``/``GET``/``DELETE
  /v1/sessions/{namespace}/{name}``, ``POST .../cycle``, ``POST .../resync``. A session
  body is checked by the real PS's own parser (``dataplane.ps.model.parse_spec``), with the
  real answers to a conflict (``session_conflict``, ``group_in_use``). A session
  "replicates" instantly: its ``PUT`` commits the first recovery point into its master
  target group at once (source time now), registers the VM's agent (R-PRE-13), and every
  cycle (each ``intervalSeconds``, or ``POST .../cycle``) commits one more;
- master target: ``GET /v1/health``, ``PUT``/``GET``/``DELETE /v1/groups/{group}``,
  ``GET /v1/groups/{group}/points``, ``POST .../rollback``, ``POST .../release``, with the
  real refusals (``group_conflict``, ``disk_in_use``, ``group_active``, ``group_released``,
  ``unknown_point``, ``unknown_group``). Any disk UUID is accepted (nothing is opened); a
  group keeps its newest :data:`KEEP_POINTS` points (the real one keeps a retention window).

Sessions with ``direction: OnPremToAzure`` (reprotect after a failback) make their points
without a master target (the real PS writes Azure replica disks and snapshots them).

A non-contract ``GET /_fake/stats`` (on any port, same mutual TLS) answers the requests
served so far per service kind, method and route, and the sessions and groups that exist:
the benchmark reads it to count the operator's data-plane calls per object.

Run (``hack/bench/controlplane.py`` does)::

    PYTHONPATH=hack:operator .venv/bin/python hack/bench/fakeplane.py \\
        --cert mt.crt --key mt.key --client-ca ca.crt \\
        --master-targets 20 --process-servers 4 --ready ready.json

``--ready`` receives ``{"masterTargets": [endpoint, ...], "processServers": [...]}`` once
every port listens (written whole, then renamed). SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file's folder holds azure.py: keep it off sys.path (it would hide the azure package).
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from failback import __version__
from failback.api import format_time
from failback.dataplane import httpkit
from failback.dataplane.httpkit import ApiError
from failback.dataplane.mt.groups import DISK_RE, MAX_DISKS, disk_key, name_problem
from failback.dataplane.ps.model import (
    ONPREM_TO_AZURE,
    SessionSpec,
    SpecError,
    parse_spec,
    point_id,
)

KEEP_POINTS = 32
"""Recovery points a group keeps (oldest pruned first)."""
TICK = 0.25
"""Seconds between two looks at which sessions are due for a cycle."""
SECTOR = 512
TIB = 1 << 40

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ---------------------------------------------------------------------------- master target


@dataclass
class Point:
    id: str
    source_time: dt.datetime
    seq: int
    disks: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sourceTime": format_time(self.source_time),
            "appConsistent": False,
            "lastSeq": self.seq,
            "disks": list(self.disks),
            "restorable": True,
        }


@dataclass
class Group:
    name: str
    disks: dict[str, int]
    """Disk id → size, as the last ``PUT`` said."""
    points: list[Point] = field(default_factory=list)
    seq: int = 0
    released: bool = False

    def status(self) -> dict[str, Any]:
        newest = self.points[-1] if self.points else None
        return {
            "name": self.name,
            "state": "released" if self.released else "active",
            "disks": list(self.disks),
            "lastDurableSeq": self.seq,
            "cycleOpen": False,
            "pointCount": len(self.points),
            "newestPoint": newest.to_json() if newest else None,
            "oldestPoint": self.points[0].to_json() if self.points else None,
            "rpoSourceTime": format_time(newest.source_time) if newest else None,
            "journalUsedBytes": 0,
            "journalCapacityBytes": TIB,
            "journalAvailableBytes": TIB,
        }

    def commit(self, pid: str, source_time: dt.datetime) -> None:
        """A cycle's point: one batch, then the point (what the real PS sends)."""
        if self.released:
            raise ApiError(409, "group_released", f"group {self.name!r} is released")
        self.seq += 1
        self.points.append(Point(pid, source_time, self.seq, tuple(self.disks)))
        del self.points[:-KEEP_POINTS]


class MasterTarget:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.groups: dict[str, Group] = {}

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/v1/health", self.health)
        r.add_get("/v1/groups/{group}", self.get_group)
        r.add_put("/v1/groups/{group}", self.put_group)
        r.add_delete("/v1/groups/{group}", self.delete_group)
        r.add_get("/v1/groups/{group}/points", self.points)
        r.add_post("/v1/groups/{group}/rollback", self.rollback)
        r.add_post("/v1/groups/{group}/release", self.release)

    def group(self, name: str) -> Group:
        found = self.groups.get(name)
        if found is None:
            raise ApiError(404, "unknown_group", f"no group {name!r} on this master target")
        return found

    async def health(self, request: web.Request) -> web.Response:
        states = [g.status() for g in self.groups.values()]
        newest = [g for g in states if g["newestPoint"]]
        latest = max(newest, key=lambda g: g["newestPoint"]["sourceTime"], default=None)
        all_have = bool(states) and len(newest) == len(states)
        return web.json_response(
            {
                "version": __version__,
                "heartbeat": format_time(now().replace(microsecond=0)),
                "retentionVolume": {
                    "path": "/mnt/retention/failback",
                    "mountPoint": "/mnt/retention",
                    "fileSystem": "ext4",
                    "capacityBytes": TIB,
                    "freeBytes": TIB,
                    "writable": True,
                    "sharesInstallVolume": False,
                },
                "journalUsedBytes": 0,
                "newestPoint": (
                    {"group": latest["name"], **latest["newestPoint"]} if latest else None
                ),
                "rpoSourceTime": (
                    min(g["rpoSourceTime"] for g in newest) if all_have and newest else None
                ),
                "disks": [
                    {"id": d, "path": None, "sizeBytes": size, "group": g.name}
                    for g in self.groups.values()
                    for d, size in g.disks.items()
                ],
                "groups": states,
            }
        )

    async def get_group(self, request: web.Request) -> web.Response:
        return web.json_response(self.group(request.match_info["group"]).status())

    async def put_group(self, request: web.Request) -> web.Response:
        name = request.match_info["group"]
        problem = name_problem(name)
        if problem is not None:
            raise ApiError(400, "invalid_field", f"group: {problem}", field="group")
        want = _wanted_disks(await httpkit.json_body(request))
        group = self.groups.get(name)
        if group is not None:
            if {disk_key(d) for d in want} != {disk_key(d) for d in group.disks}:
                raise ApiError(
                    409,
                    "group_conflict",
                    f"group {name!r} exists with disks {', '.join(group.disks)}",
                    disks=list(group.disks),
                )
            group.disks, group.released = want, False
            return web.json_response(group.status())
        keys = {disk_key(d): d for d in want}
        for other in self.groups.values():
            for d in other.disks:
                if disk_key(d) in keys:
                    raise ApiError(
                        409,
                        "disk_in_use",
                        f"disk {keys[disk_key(d)]} is in group {other.name!r}",
                        diskId=keys[disk_key(d)],
                        group=other.name,
                    )
        group = self.groups[name] = Group(name, want)
        return web.json_response(group.status(), status=201)

    async def delete_group(self, request: web.Request) -> web.Response:
        group = self.group(request.match_info["group"])
        if not group.released:
            raise ApiError(409, "group_active", f"group {group.name!r} is active: release it first")
        del self.groups[group.name]
        return web.json_response({"group": group.name, "deleted": True})

    async def points(self, request: web.Request) -> web.Response:
        group = self.group(request.match_info["group"])
        return web.json_response(
            {"group": group.name, "points": [p.to_json() for p in group.points]}
        )

    async def rollback(self, request: web.Request) -> web.Response:
        group = self.group(request.match_info["group"])
        body = await httpkit.json_body(request)
        wanted = httpkit.str_field(body, "pointId")
        if group.released:
            raise ApiError(409, "group_released", f"group {group.name!r} is released")
        at = next((i for i, p in enumerate(group.points) if p.id == wanted), None)
        if at is None:
            raise ApiError(404, "unknown_point", f"no point {wanted!r} in group {group.name!r}")
        del group.points[at + 1 :]
        point = group.points[at]
        group.seq = point.seq
        return web.json_response(
            {"group": group.name, "point": point.to_json(), "lastDurableSeq": group.seq}
        )

    async def release(self, request: web.Request) -> web.Response:
        group = self.group(request.match_info["group"])
        group.released = True
        newest = group.points[-1].to_json() if group.points else None
        return web.json_response({"group": group.name, "released": True, "point": newest})


def _wanted_disks(body: dict[str, Any]) -> dict[str, int]:
    """``{"disks": [{"id", "sizeBytes"}, ...]}``: 1..64 disks, each listed once."""
    disks = body.get("disks")
    if not isinstance(disks, list) or not 1 <= len(disks) <= MAX_DISKS:
        raise ApiError(400, "invalid_field", f"disks must list 1 to {MAX_DISKS}", field="disks")
    wanted: dict[str, int] = {}
    seen: set[str] = set()
    for i, disk in enumerate(disks):
        at = f"disks[{i}]"
        disk_id = disk.get("id") if isinstance(disk, dict) else None
        size = disk.get("sizeBytes") if isinstance(disk, dict) else None
        if not isinstance(disk_id, str) or not DISK_RE.match(disk_id):
            raise ApiError(400, "invalid_field", f"{at}.id must be a disk UUID", field=f"{at}.id")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0 or size % SECTOR:
            raise ApiError(
                400,
                "invalid_field",
                f"{at}.sizeBytes must be a positive multiple of {SECTOR}",
                field=f"{at}.sizeBytes",
            )
        if disk_key(disk_id) in seen:
            raise ApiError(400, "invalid_field", f"{at}.id is listed twice", field=f"{at}.id")
        seen.add(disk_key(disk_id))
        wanted[disk_id] = size
    return wanted


# ---------------------------------------------------------------------------- process server


@dataclass
class Session:
    spec: SessionSpec
    incarnation: str = field(default_factory=lambda: secrets.token_hex(4))
    counter: int = 0
    cycles: int = 0
    last_point: str | None = None
    source_time: dt.datetime | None = None
    registered: dt.datetime | None = None
    next_cycle: float = 0.0
    """``loop.time()`` of the next cycle."""
    error: dict[str, Any] | None = None
    released: bool = False

    def status(self) -> dict[str, Any]:
        at = now()
        phase = "Released" if self.released else "Paused" if self.spec.paused else "Idle"
        names = [d.name for d in self.spec.disks] or [r.name for r in self.spec.replicas]
        last_cycle = None
        if self.counter:
            last_cycle = {
                "number": self.counter,
                "disks": [
                    {
                        "name": name,
                        "mode": "Initial" if self.counter == 1 else "Incremental",
                        "reason": None,
                        "bytesChanged": 0,
                        "bytesCleared": 0,
                        "bytesRead": 0,
                    }
                    for name in names
                ],
                "batchesSent": 1,
                "batchesSkipped": 0,
                "wireBytes": 0,
                "seconds": 0.0,
            }
        wall = dt.datetime.fromtimestamp(
            at.timestamp() + max(0.0, self.next_cycle - asyncio.get_running_loop().time()), dt.UTC
        )
        return {
            "namespace": self.spec.namespace,
            "name": self.spec.name,
            "spec": self.spec.to_dict(),
            "phase": phase,
            "cyclesCompleted": self.cycles,
            "cycleNumber": self.counter,
            "lastPoint": self.last_point,
            "rpoSourceTime": format_time(self.source_time) if self.source_time else None,
            "rpoSeconds": (
                round((at - self.source_time).total_seconds(), 3) if self.source_time else None
            ),
            "resyncPending": None,
            "cycle": None,
            "lastCycle": last_cycle,
            "queueBytes": 0,
            "bytesSent": 0,
            "wireBytes": 0,
            "throughputBytesPerSecond": 0,
            "lastError": self.error,
            "nextCycleAt": None if self.spec.paused or self.released else format_time(wall),
        }


class ProcessServer:
    def __init__(self, endpoint: str, master_targets: dict[str, MasterTarget]) -> None:
        self.endpoint = endpoint
        self.master_targets = master_targets
        self.sessions: dict[str, Session] = {}

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/v1/health", self.health)
        r.add_get("/v1/sessions", self.list_sessions)
        r.add_put("/v1/sessions/{namespace}/{name}", self.put_session)
        r.add_get("/v1/sessions/{namespace}/{name}", self.get_session)
        r.add_delete("/v1/sessions/{namespace}/{name}", self.delete_session)
        r.add_post("/v1/sessions/{namespace}/{name}/cycle", self.run_cycle)
        r.add_post("/v1/sessions/{namespace}/{name}/resync", self.run_cycle)

    def find(self, request: web.Request) -> Session:
        key = f"{request.match_info['namespace']}/{request.match_info['name']}"
        found = self.sessions.get(key)
        if found is None:
            raise ApiError(404, "unknown_session", f"no session {key} on this process server")
        return found

    def cycle(self, session: Session) -> None:
        """One instant cycle: the next point, committed in the session's group."""
        loop = asyncio.get_running_loop()
        session.next_cycle = loop.time() + session.spec.interval_seconds
        when = now()
        if session.source_time is not None and when <= session.source_time:
            when = session.source_time + dt.timedelta(microseconds=1)
        number = session.counter + 1
        pid = point_id(session.incarnation, number)
        spec = session.spec
        if spec.direction != ONPREM_TO_AZURE:
            mt = self.master_targets.get(spec.mt_endpoint)
            group = mt.groups.get(spec.mt_group) if mt is not None else None
            session.released = group is not None and group.released
            if group is None or group.released:
                code = "GroupReleased" if group is not None else "TargetUnreachable"
                session.error = {
                    "code": code,
                    "message": f"group {spec.mt_group} at {spec.mt_endpoint}: {code}",
                    "time": format_time(when),
                }
                return
            group.commit(pid, when)
        session.counter, session.cycles, session.last_point = number, session.cycles + 1, pid
        session.source_time, session.error = when, None
        if session.registered is None:
            session.registered = when

    def tick(self) -> None:
        due = asyncio.get_running_loop().time()
        for session in self.sessions.values():
            if not session.spec.paused and session.next_cycle <= due:
                self.cycle(session)

    async def health(self, request: web.Request) -> web.Response:
        sessions = [self.sessions[k] for k in sorted(self.sessions)]
        times = [s.source_time for s in sessions]
        return web.json_response(
            {
                "version": __version__,
                "heartbeat": format_time(now().replace(microsecond=0)),
                "cpuPercent": 5,
                "memoryPercent": 20,
                "cacheFreePercent": 90,
                "throughputBytesPerSecond": 0,
                "queueBytes": 0,
                "residentBytes": 0,
                "controlPlane": {"reachable": True, "error": None},
                "sessions": [s.spec.key for s in sessions],
                "agents": [
                    {"vmId": vm_id, "registered": format_time(s.registered)}
                    for s in sessions
                    if s.registered
                    for vm_id in s.spec.all_vm_ids
                ],
                "rpoSourceTime": (
                    None
                    if not times or None in times
                    else format_time(min(t for t in times if t is not None))
                ),
                "replication": [
                    {
                        "session": s.spec.key,
                        "phase": "Idle",
                        "rpoSeconds": s.status()["rpoSeconds"],
                        "queueBytes": 0,
                        "lastError": s.error,
                    }
                    for s in sessions
                ],
            }
        )

    async def list_sessions(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"sessions": [s.status() for _, s in sorted(self.sessions.items())]}
        )

    async def get_session(self, request: web.Request) -> web.Response:
        return web.json_response(self.find(request).status())

    async def put_session(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        body = await httpkit.json_body(request)
        try:
            spec = parse_spec(namespace, name, body)
        except SpecError as exc:
            raise ApiError(400, "invalid_field", str(exc), field=exc.field) from exc
        current = self.sessions.get(spec.key)
        if current is not None:
            if current.spec != spec and not current.spec.same_target(spec):
                raise ApiError(
                    409,
                    "session_conflict",
                    f"session {spec.key} replicates other disks or to another master target; "
                    "only paused and intervalSeconds may change: DELETE it first",
                )
            current.spec = spec
            return web.json_response(current.status())
        other = next((s for s in self.sessions.values() if s.spec.targets() & spec.targets()), None)
        if other is not None:
            raise ApiError(
                409, "group_in_use", f"session {other.spec.key} already replicates there"
            )
        session = self.sessions[spec.key] = Session(spec)
        self.cycle(session)
        return web.json_response(session.status(), status=201)

    async def delete_session(self, request: web.Request) -> web.Response:
        session = self.find(request)
        del self.sessions[session.spec.key]
        return web.json_response({"deleted": session.spec.key, "snapshotsLeft": []})

    async def run_cycle(self, request: web.Request) -> web.Response:
        session = self.find(request)
        self.cycle(session)
        return web.json_response(session.status(), status=202)


# ---------------------------------------------------------------------------- the process


class Stats:
    def __init__(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()

    def middleware(self, kind: str) -> Any:
        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            route = request.match_info.route.resource
            canonical = route.canonical if route is not None else request.path
            try:
                response = await handler(request)
            except ApiError as exc:
                response = web.json_response(
                    {"error": {"code": exc.code, "message": exc.message, **exc.extra}},
                    status=exc.status,
                )
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "bad_request")
                response = web.json_response(
                    {"error": {"code": code, "message": f"{request.method} {request.path}"}},
                    status=exc.status,
                )
            if not canonical.startswith("/_fake"):
                self.requests[f"{kind} {request.method} {canonical} {response.status}"] += 1
            return response

        return middleware


def _listen(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(512)
    sock.setblocking(False)
    return sock


class FakePlane:
    def __init__(self, host: str, master_targets: int, process_servers: int) -> None:
        self.host = host
        self.stats = Stats()
        self.sockets = {
            "mt": [_listen(host) for _ in range(master_targets)],
            "ps": [_listen(host) for _ in range(process_servers)],
        }
        self.mts = {
            mt.endpoint: mt for mt in (MasterTarget(self._url(s)) for s in self.sockets["mt"])
        }
        self.pss = [ProcessServer(self._url(s), self.mts) for s in self.sockets["ps"]]
        self.runners: list[web.AppRunner] = []

    def _url(self, sock: socket.socket) -> str:
        return f"https://{self.host}:{sock.getsockname()[1]}"

    async def stats_answer(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": dict(sorted(self.stats.requests.items())),
                "sessions": sum(len(ps.sessions) for ps in self.pss),
                "groups": sum(len(mt.groups) for mt in self.mts.values()),
                "points": sum(
                    len(g.points) for mt in self.mts.values() for g in mt.groups.values()
                ),
            }
        )

    async def start(self, context: ssl.SSLContext) -> None:
        services: list[tuple[str, MasterTarget | ProcessServer, socket.socket]] = [
            ("mt", mt, sock) for mt, sock in zip(self.mts.values(), self.sockets["mt"], strict=True)
        ]
        services += [
            ("ps", ps, sock) for ps, sock in zip(self.pss, self.sockets["ps"], strict=True)
        ]
        for kind, service, sock in services:
            app = web.Application(
                middlewares=[self.stats.middleware(kind)], client_max_size=httpkit.MAX_JSON
            )
            service.routes(app)
            app.router.add_get("/_fake/stats", self.stats_answer)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            await web.SockSite(runner, sock, ssl_context=context).start()
            self.runners.append(runner)

    async def tick(self) -> None:
        while True:
            for ps in self.pss:
                ps.tick()
            await asyncio.sleep(TICK)

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()

    def describe(self) -> dict[str, Any]:
        return {
            "masterTargets": list(self.mts),
            "processServers": [ps.endpoint for ps in self.pss],
            "pid": os.getpid(),
        }


async def serve(args: argparse.Namespace) -> None:
    context = httpkit.server_context(Path(args.cert), Path(args.key), Path(args.client_ca))
    plane = FakePlane(args.host, args.master_targets, args.process_servers)
    await plane.start(context)
    ready = Path(args.ready)
    partial = ready.with_name(ready.name + ".partial")
    partial.write_text(json.dumps(plane.describe()))
    partial.rename(ready)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ticker = asyncio.create_task(plane.tick())
    await stop.wait()
    ticker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticker
    await plane.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cert", required=True, help="PEM server certificate (for --host)")
    parser.add_argument("--key", required=True, help="PEM key of --cert")
    parser.add_argument("--client-ca", required=True, help="CA of the clients' certificates")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--master-targets", type=int, default=1, metavar="N")
    parser.add_argument("--process-servers", type=int, default=1, metavar="N")
    parser.add_argument("--ready", required=True, help="file to write the endpoints to")
    args = parser.parse_args(argv)
    if args.master_targets < 1 or args.process_servers < 1:
        parser.error("--master-targets and --process-servers must be at least 1")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
