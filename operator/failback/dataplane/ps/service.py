"""The process server service: an aiohttp HTTPS server (mutual TLS) with the operator's
control API, and one replication :class:`~.session.Session` per ProtectedVM.

The API is ``docs/processserver-api.md``. Sessions survive a restart: their state is in
``--state-dir`` and each resumes where the MT says it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from failback import __version__
from failback.api import format_time
from failback.dataplane import httpkit, logs
from failback.dataplane.httpkit import ApiError, StartupError
from failback.dataplane.ps import sysinfo
from failback.dataplane.ps.config import ProcessServerConfig
from failback.dataplane.ps.model import (
    ONPREM_TO_AZURE,
    SessionState,
    SpecError,
    new_incarnation,
    parse_spec,
)
from failback.dataplane.ps.mtclient import MasterTargetClient
from failback.dataplane.ps.session import Session
from failback.dataplane.ps.sources import AzureDisks, GroupSource, VSphereVM
from failback.dataplane.ps.store import StateCorrupt, StateStore
from failback.dataplane.ps.target import AzureReplicas, MasterTargetGroup, Target
from failback.dataplane.sink_azure import SinkSettings
from failback.dataplane.source_azure import SourceSettings
from failback.dataplane.source_vsphere import DatastoreFiles
from failback.dataplane.source_vsphere import SourceSettings as VSphereSettings
from failback.errors import Permanent
from failback.ports.azure import AzureCompute
from failback.ports.vsphere import VCenter

LOGGER = "failback.ps"

ComputeFactory = Callable[[str], Awaitable[AzureCompute]]
"""An Azure compute client for a subscription (the CLI builds it from its credentials)."""
VCenterFactory = Callable[[str], Awaitable[VCenter]]
"""A logged-in vCenter client for a server (the CLI builds it from its credentials)."""
TICK = 1.0
PROBE_EVERY = 30.0


class ProcessServerService:
    def __init__(
        self,
        config: ProcessServerConfig,
        compute_for: ComputeFactory,
        logger: logging.Logger | None = None,
        vcenter_for: VCenterFactory | None = None,
    ) -> None:
        self.config = config
        self.compute_for = compute_for
        self.vcenter_for = vcenter_for
        self.log = logger or logging.getLogger(LOGGER)
        self.store = StateStore(config.state_dir)
        self.sessions: dict[str, Session] = {}
        self._deleting: dict[str, asyncio.Future[list[str]]] = {}
        self.mt = MasterTargetClient(httpkit.client_context(config.cert, config.key, config.mt_ca))
        self.source_settings = SourceSettings(
            batch_bytes=config.batch_bytes,
            # One read never makes an extent (and so a batch) larger than a batch.
            read_chunk=min(4 << 20, config.batch_bytes),
            snapshots_per_window=config.snapshots_per_window,
            snapshot_window=config.snapshot_window,
            ca_file=config.blob_ca_file,
        )
        self.cpu = sysinfo.CpuSampler()
        self.heartbeat = dt.datetime.now(dt.UTC)
        self.control_plane_error: str | None = (
            None if config.control_plane else "no control plane address: pass --control-plane"
        )
        self._ticker: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def _source_for(self, state: SessionState) -> GroupSource:
        spec = state.spec
        if spec.direction == ONPREM_TO_AZURE:
            assert spec.vcenter_server is not None
            assert spec.vm_instance_uuid is not None
            return VSphereVM(
                await self._vcenter(spec.vcenter_server),
                spec.vm_instance_uuid,
                DatastoreFiles(dict(self.config.datastores)),
                state.source,
                VSphereSettings(
                    change_tracking=(
                        "sidecar" if self.config.change_tracking == "sidecar" else "vcenter"
                    ),
                    batch_bytes=self.config.batch_bytes,
                    read_chunk=min(4 << 20, self.config.batch_bytes),
                ),
            )
        compute = await self.compute_for(spec.subscription_id)
        return AzureDisks(
            compute,
            [(d.resource_group, d.name, d.target_disk_id) for d in spec.disks],
            state.source,
            self.source_settings,
        )

    async def _vcenter(self, server: str) -> VCenter:
        if self.vcenter_for is None:
            raise Permanent(
                "this process server has no vCenter credentials: start it with "
                "--vcenter-credentials (a mounted vCenter Secret) to replicate OnPremToAzure"
            )
        return await self.vcenter_for(server)

    async def _target_for(self, state: SessionState) -> Target:
        spec = state.spec
        if spec.direction == ONPREM_TO_AZURE:
            assert spec.location is not None
            return AzureReplicas(
                await self.compute_for(spec.subscription_id),
                [(r.source_disk_uuid, r.resource_group, r.name) for r in spec.replicas],
                location=spec.location,
                retention=dt.timedelta(seconds=spec.retention_seconds),
                state_file=self.store.target_file(spec.namespace, spec.name),
                settings=SinkSettings(
                    ca_file=self.config.blob_ca_file,
                    snapshots_per_window=self.config.snapshots_per_window,
                    snapshot_window=self.config.snapshot_window,
                ),
            )
        return MasterTargetGroup(
            self.mt, spec.mt_endpoint, spec.mt_group, self.config.compression_level
        )

    def _session(self, state: SessionState) -> Session:
        return Session(
            state,
            store=self.store,
            source_for=self._source_for,
            target_for=self._target_for,
            max_queue_bytes=self.config.max_queue_bytes,
            log=self.log,
        )

    async def open(self) -> None:
        try:
            self.store.open()
            states = self.store.load_all()
        except (OSError, StateCorrupt) as exc:
            raise StartupError(f"--state-dir {self.config.state_dir}: {exc}") from exc
        for state in states:
            session = self.sessions[state.spec.key] = self._session(state)
            session.start()
            logs.event(
                self.log,
                logging.INFO,
                "session resumed",
                session=state.spec.key,
                counter=state.counter,
                openCycle=state.open.number if state.open else None,
            )
        self._ticker = asyncio.create_task(self._tick())

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await asyncio.gather(*(s.stop() for s in self.sessions.values()))
        await self.mt.close()

    async def _tick(self) -> None:
        probed = 0.0
        loop = asyncio.get_running_loop()
        while True:
            self.cpu.sample()
            if self.config.control_plane and loop.time() - probed >= PROBE_EVERY:
                probed = loop.time()
                self.control_plane_error = await sysinfo.reach(self.config.control_plane)
            self.heartbeat = dt.datetime.now(dt.UTC)
            await asyncio.sleep(TICK)

    # ------------------------------------------------------------------ HTTP

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[httpkit.error_middleware(self.log, {})],
            client_max_size=httpkit.MAX_JSON,
        )
        r = app.router
        r.add_get("/v1/health", self.health)
        r.add_get("/v1/sessions", self.list_sessions)
        r.add_put("/v1/sessions/{namespace}/{name}", self.put_session)
        r.add_get("/v1/sessions/{namespace}/{name}", self.get_session)
        r.add_delete("/v1/sessions/{namespace}/{name}", self.delete_session)
        r.add_post("/v1/sessions/{namespace}/{name}/cycle", self.run_cycle)
        r.add_post("/v1/sessions/{namespace}/{name}/resync", self.resync)
        return app

    def _find(self, request: web.Request) -> Session:
        key = f"{request.match_info['namespace']}/{request.match_info['name']}"
        session = self.sessions.get(key)
        if session is None:
            raise ApiError(
                404,
                "unknown_session",
                f"no session {key} on this process server (sessions: "
                f"{', '.join(sorted(self.sessions)) or 'none'})",
            )
        return session

    async def health(self, request: web.Request) -> web.Response:
        sessions = sorted(self.sessions.values(), key=lambda s: s.spec.key)
        rpo_times = [s.rpo_source_time() for s in sessions]
        return web.json_response(
            {
                "version": __version__,
                "heartbeat": format_time(self.heartbeat),
                "cpuPercent": self.cpu.percent(),
                "memoryPercent": sysinfo.memory_percent(),
                "cacheFreePercent": sysinfo.free_percent(self.config.state_dir),
                "throughputBytesPerSecond": sum(s.counters.throughput() for s in sessions),
                "queueBytes": sum(s.queue_bytes for s in sessions),
                "residentBytes": sysinfo.rss_bytes(),
                "controlPlane": {
                    "reachable": self.control_plane_error is None,
                    "error": self.control_plane_error,
                },
                "sessions": [s.spec.key for s in sessions],
                "agents": [
                    {"vmId": vm_id, "registered": format_time(s.state.registered)}
                    for s in sessions
                    if s.state.registered
                    for vm_id in s.spec.all_vm_ids
                ],
                "rpoSourceTime": (
                    None
                    if not rpo_times or None in rpo_times
                    else format_time(min(t for t in rpo_times if t is not None))
                ),
                "replication": [
                    {
                        "session": s.spec.key,
                        "phase": s.phase,
                        "rpoSeconds": s.status()["rpoSeconds"],
                        "queueBytes": s.queue_bytes,
                        "lastError": s.last_error,
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
        return web.json_response(self._find(request).status())

    async def put_session(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        body = await httpkit.json_body(request)
        try:
            spec = parse_spec(namespace, name, body)
        except SpecError as exc:
            raise ApiError(400, "invalid_field", str(exc), field=exc.field) from exc
        current = self.sessions.get(spec.key)
        if current is not None:
            if current.spec == spec:
                return web.json_response(current.status())
            if not current.spec.same_target(spec):
                raise ApiError(
                    409,
                    "session_conflict",
                    f"session {spec.key} replicates other disks or to another master target; "
                    "only paused and intervalSeconds may change: DELETE it first",
                )
            current.update(spec)
            logs.event(
                self.log,
                logging.INFO,
                "session updated",
                session=spec.key,
                paused=spec.paused,
                intervalSeconds=spec.interval_seconds,
            )
            return web.json_response(current.status())
        other = next(
            (s for s in self.sessions.values() if s.spec.targets() & spec.targets()),
            None,
        )
        if other is not None:
            raise ApiError(
                409,
                "group_in_use",
                f"session {other.spec.key} already replicates into "
                f"{', '.join(sorted(other.spec.targets() & spec.targets()))}",
            )
        state = SessionState(spec, incarnation=new_incarnation())
        self.store.save(state)
        session = self.sessions[spec.key] = self._session(state)
        session.start()
        logs.event(
            self.log,
            logging.INFO,
            "session started",
            session=spec.key,
            masterTarget=spec.mt_endpoint,
            group=spec.mt_group,
            disks=[d.name for d in spec.disks],
        )
        return web.json_response(session.status(), status=201)

    async def delete_session(self, request: web.Request) -> web.Response:
        session = self._find(request)
        key = session.spec.key
        # Two DELETEs of one session (a client retrying, or a restarted operator asking
        # again) share one deletion and get the same answer.
        deleting = self._deleting.get(key)
        if deleting is None:
            deleting = self._deleting[key] = asyncio.ensure_future(self._delete(session))
            deleting.add_done_callback(lambda _: self._deleting.pop(key, None))
        left = await asyncio.shield(deleting)
        return web.json_response({"deleted": key, "snapshotsLeft": left})

    async def _delete(self, session: Session) -> list[str]:
        await session.stop(finish_cleanup=True)
        left = await self._delete_snapshots(session)
        self.store.delete(session.spec.namespace, session.spec.name)
        self.sessions.pop(session.spec.key, None)
        logs.event(self.log, logging.INFO, "session deleted", session=session.spec.key, left=left)
        return left

    async def _delete_snapshots(self, session: Session) -> list[str]:
        """Delete the replication snapshots the session made (best effort; the names of
        those that could not be deleted are answered, so nothing leaks silently)."""
        try:
            return await session.forget()
        except Exception as exc:
            logs.event(
                self.log,
                logging.WARNING,
                "cleaning up the session's snapshots failed",
                session=session.spec.key,
                error=f"{exc.__class__.__name__}: {exc}",
            )
            return [f"(could not list: {exc.__class__.__name__})"]

    async def run_cycle(self, request: web.Request) -> web.Response:
        session = self._find(request)
        session.request_cycle()
        return web.json_response(session.status(), status=202)

    async def resync(self, request: web.Request) -> web.Response:
        session = self._find(request)
        session.request_cycle(resync="a full resync was requested through the control API")
        return web.json_response(session.status(), status=202)


async def _serve(
    config: ProcessServerConfig,
    compute_for: ComputeFactory,
    vcenter_for: VCenterFactory | None,
    log: Any,
) -> None:
    context = httpkit.server_context(config.cert, config.key, config.client_ca)
    service = ProcessServerService(config, compute_for, log, vcenter_for=vcenter_for)
    await service.open()
    try:
        await httpkit.run_until_signalled(
            service.app(),
            config.host,
            config.port,
            context,
            log,
            stateDir=str(config.state_dir),
            sessions=sorted(service.sessions),
            version=__version__,
        )
    finally:
        await service.close()


def serve(
    config: ProcessServerConfig,
    compute_for: ComputeFactory,
    *,
    vcenter_for: VCenterFactory | None = None,
    verbose: bool = False,
    closing: Any = None,
) -> int:
    """Run until SIGTERM/SIGINT; :class:`StartupError` if it cannot start. ``closing`` (an
    async callable) runs after the service stopped (the CLI closes its Azure clients)."""
    log = logs.configure(LOGGER, verbose)

    async def main() -> None:
        try:
            await _serve(config, compute_for, vcenter_for, log)
        finally:
            if closing is not None:
                await closing()

    asyncio.run(main())
    return 0


__all__ = ["LOGGER", "ProcessServerService", "StartupError", "serve"]
