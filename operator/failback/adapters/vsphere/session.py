"""One vCenter session per server and user, shared by every object that names it.

- **Cached**: :class:`Sessions` keeps one :class:`Client` per server and user (and
  credentials: a rotated Secret gets a new one, the unused old one is logged out).
- **Liveness-checked**: before a session idle for ``check_interval`` seconds is reused,
  one PropertyCollector read of ``sessionManager.currentSession`` proves it alive; a dead
  one is replaced by a new login. A call that fails with ``NotAuthenticated`` logs in
  again and is retried once.
- **Logged out** on :meth:`Sessions.close` (the operator's cleanup): vCenter keeps an idle
  session 120 minutes otherwise.
- **Off the event loop**: pyVmomi blocks, so every call runs in this cache's thread pool,
  at most ``max_concurrency`` at once per vCenter (a semaphore per client).
- **Counted**: every SOAP request sent (``client.calls``, by method name) — the wire
  count that the tests and the benchmark read.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pyVmomi import SoapAdapter as _soap
from pyVmomi import vim as _vim
from pyVmomi import vmodl as _vmodl

from failback.adapters.vsphere import faults, inventory, operations, tls
from failback.domain import vsphere as vs
from failback.errors import FailbackError
from failback.ports.vsphere import (
    DiskChangeInfo,
    NewDisk,
    NewVM,
    SnapshotDisk,
    SnapshotInfo,
    TaskState,
    VCenter,
    VCenters,
)

# pyVmomi's stubs leave most of it untyped: handled as dynamic here.
vim: Any = _vim
vmodl: Any = _vmodl
SoapStubAdapter: Any = _soap.SoapStubAdapter

T = TypeVar("T")
log = logging.getLogger(__name__)

API_VERSION = "vim.version.version11"
"""The vSphere API version spoken (6.5): every property read here exists since then."""


class _CountingStub(SoapStubAdapter):  # type: ignore[misc]  # Any base
    """pyVmomi's SOAP stub, counting each request it sends, by method."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: collections.Counter[str] = collections.Counter()
        self._calls_lock = threading.Lock()

    def InvokeMethod(self, mo: Any, info: Any, args: Any, outerStub: Any = None) -> Any:
        with self._calls_lock:
            self.calls[info.wsdlName] += 1
        return super().InvokeMethod(mo, info, args, outerStub)


class Client:
    """One logged-in session with one vCenter (implements ``ports.vsphere.VCenter``)."""

    def __init__(
        self,
        credentials: vs.VCenterCredentials,
        executor: ThreadPoolExecutor,
        *,
        max_concurrency: int,
        inventory_max_age: float,
        check_interval: float,
        timeout: float,
    ) -> None:
        self.credentials = credentials
        self._executor = executor
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._max_concurrency = max_concurrency
        self._inventory_max_age = inventory_max_age
        self._check_interval = check_interval
        self._timeout = timeout
        self._login_lock = threading.Lock()
        self._stub: _CountingStub | None = None
        self._content: Any = None
        self._session_key: str | None = None
        self._view: Any = None
        self._licenses: Any = None
        self._login_failed: tuple[FailbackError, float] | None = None
        self._last_ok = 0.0
        self._inventory: vs.Inventory | None = None
        self._inventory_at = 0.0
        self._inventory_task: asyncio.Future[vs.Inventory] | None = None
        self.calls: collections.Counter[str] = collections.Counter()
        """SOAP requests sent, by method, over every login of this client."""
        self.logins = 0

    @property
    def server(self) -> str:
        return self.credentials.server

    # ---------------------------------------------------------------- session

    def _login(self) -> None:
        """Log in (blocking); the caller holds ``_login_lock``."""
        self._drop()
        creds = self.credentials
        stub = _CountingStub(
            host=creds.host,
            port=creds.port,
            version=API_VERSION,
            sslContext=tls.context(creds),
            poolSize=self._max_concurrency,
            httpConnectionTimeout=self._timeout,
        )
        if creds.thumbprint is not None:
            stub.scheme = tls.pinned_connection(creds.thumbprint)
        self._stub = stub
        si = vim.ServiceInstance("ServiceInstance", stub)
        content = si.RetrieveContent()
        session = content.sessionManager.Login(creds.username, creds.password)
        self._content = content
        self._session_key = session.key
        self._view = content.viewManager.CreateContainerView(
            content.rootFolder, list(inventory.PROPERTIES), True
        )
        # One read per login, not per pass (a property of a property is a round trip).
        self._licenses = content.licenseManager.licenseAssignmentManager
        self.logins += 1
        self._last_ok = time.monotonic()

    def _drop(self) -> None:
        stub = self._stub
        if stub is not None:
            self.calls.update(stub.calls)
            stub.calls.clear()
            stub.DropConnections()
        self._stub = self._content = self._session_key = self._view = None

    def _alive(self) -> bool:
        """One PropertyCollector read of currentSession: None once vCenter forgot us."""
        rows = inventory.retrieve(
            self._content.propertyCollector,
            inventory.object_spec(self._content.sessionManager, ("currentSession",)),
        )
        current = rows[0][1].get("currentSession") if rows else None
        return current is not None and current.key == self._session_key

    def _ensure(self) -> Any:
        """The content of a live session (blocking): logs in or checks as needed."""
        with self._login_lock:
            if self._content is None:
                self._login_once()
            elif time.monotonic() - self._last_ok > self._check_interval:
                try:
                    alive = self._alive()
                except vim.fault.NotAuthenticated:
                    alive = False
                if alive:
                    self._last_ok = time.monotonic()
                else:
                    log.info("vCenter %s session expired; logging in again", self.server)
                    self._login()
            return self._content

    def _login_once(self) -> None:
        """Log in, unless a login failed less than ``check_interval`` seconds ago: then
        fail the same way without asking vCenter again, so that many objects naming a
        Secret with a wrong password cannot lock the account out."""
        failed = self._login_failed
        if failed is not None and time.monotonic() - failed[1] < self._check_interval:
            raise failed[0]
        try:
            self._login()
        except Exception as exc:
            error = faults.translate(exc, self.server)
            self._login_failed = (error, time.monotonic())
            self._drop()
            raise error from exc
        self._login_failed = None

    def _relogin(self) -> None:
        with self._login_lock:
            self._login()

    def logout(self) -> None:
        """End the session on vCenter (blocking); errors are logged, never raised."""
        with self._login_lock:
            content = self._content
            if content is not None:
                try:
                    content.sessionManager.Logout()
                except Exception as exc:  # the session may be gone already
                    log.info("vCenter %s logout: %s", self.server, type(exc).__name__)
            self._drop()

    def wire_calls(self) -> collections.Counter[str]:
        """Every SOAP request sent so far, by method (including the current login's)."""
        total = collections.Counter(self.calls)
        if self._stub is not None:
            total.update(self._stub.calls)
        return total

    @property
    def session_key(self) -> str | None:
        return self._session_key

    # ---------------------------------------------------------------- calls

    def _sync(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(content)`` on a live session, logging in again once if vCenter lost it."""
        try:
            content = self._ensure()
            try:
                result = fn(content)
            except (vim.fault.NotAuthenticated, vmodl.fault.ManagedObjectNotFound) as exc:
                if not self._session_lost(exc):
                    raise
                log.info("vCenter %s ended the session; logging in again", self.server)
                self._relogin()
                result = fn(self._content)
            self._last_ok = time.monotonic()
            return result
        except FailbackError:
            raise
        except Exception as exc:
            error = faults.translate(exc, self.server)
            if isinstance(error, faults.SessionLost):
                with self._login_lock:
                    self._drop()
            raise error from exc

    def _session_lost(self, exc: Exception) -> bool:
        """NotAuthenticated, or this session's container view gone (how vcsim, and a
        vCenter that restarted, answer once the session it belonged to has ended)."""
        if isinstance(exc, vim.fault.NotAuthenticated):
            return True
        gone = getattr(getattr(exc, "obj", None), "_moId", None)
        return gone is not None and gone == getattr(self._view, "_moId", None)

    async def call(self, fn: Callable[[Any], T]) -> T:
        """``fn(content)`` in the thread pool, within this vCenter's concurrency cap."""
        async with self._semaphore:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._sync, fn)

    # ---------------------------------------------------------------- reads

    def _read_inventory(self, content: Any) -> vs.Inventory:
        rows = inventory.retrieve(content.propertyCollector, inventory.view_spec(self._view))
        assignments = self._licenses.QueryAssignedLicenses()
        licenses = {
            a.entityId: vs.License(
                edition_key=a.assignedLicense.editionKey or "", name=a.assignedLicense.name or ""
            )
            for a in assignments or ()
        }
        datacenters = [o for o, _ in rows if isinstance(o, vim.Datacenter)]
        missing: dict[str, tuple[str, ...]] = {}
        if datacenters:
            for entity in content.authorizationManager.HasPrivilegeOnEntities(
                entity=datacenters,
                sessionId=self._session_key,
                privId=list(inventory.REQUIRED_PRIVILEGES),
            ):
                lacking = tuple(p.privId for p in entity.privAvailability if not p.isGranted)
                if lacking:
                    missing[inventory.moid(entity.entity) or ""] = lacking
        return inventory.build(self.server, rows, licenses, missing)

    async def inventory(self, max_age: float | None = None) -> vs.Inventory:
        """The inventory, read at most once per ``max_age`` seconds whoever asks: callers
        arriving while a read is in flight share it (one read per pass, not per object)."""
        age = self._inventory_max_age if max_age is None else max_age
        if self._inventory is not None and time.monotonic() - self._inventory_at <= age:
            return self._inventory
        if self._inventory_task is None or self._inventory_task.done():
            self._inventory_task = asyncio.ensure_future(self._refresh())
        return await asyncio.shield(self._inventory_task)

    async def _refresh(self) -> vs.Inventory:
        started = time.monotonic()
        inv = await self.call(self._read_inventory)
        self._inventory, self._inventory_at = inv, started
        return inv

    def invalidate(self) -> None:
        """Forget the cached inventory (after this client changed something)."""
        self._inventory = None

    async def vm(self, instance_uuid: str) -> vs.VM | None:
        def read(content: Any) -> vs.VM | None:
            obj = operations.find_vm(content, instance_uuid)
            if obj is None:
                return None
            rows = inventory.retrieve(
                content.propertyCollector, inventory.object_spec(obj, inventory.VM_PROPERTIES)
            )
            if not rows:
                return None
            names = operations.datastore_names(content, rows[0][1].get("datastore") or ())
            return inventory.to_vm(obj, rows[0][1], names)

        return await self.call(read)

    async def privileges(
        self, morefs: Sequence[str], privileges: Sequence[str]
    ) -> dict[str, tuple[str, ...]]:
        def read(content: Any) -> dict[str, tuple[str, ...]]:
            entities = [operations.managed_entity(content, m) for m in morefs]
            out: dict[str, tuple[str, ...]] = {}
            for entity in content.authorizationManager.HasPrivilegeOnEntities(
                entity=entities, sessionId=self._session_key, privId=list(privileges)
            ):
                out[inventory.moid(entity.entity) or ""] = tuple(
                    p.privId for p in entity.privAvailability if not p.isGranted
                )
            return out

        return await self.call(read)

    # ---------------------------------------------------------------- operations

    async def _operation(self, fn: Callable[[Any], T]) -> T:
        try:
            return await self.call(fn)
        finally:
            self.invalidate()

    async def power_on(self, instance_uuid: str) -> TaskState | None:
        return await self._operation(lambda c: operations.power(c, instance_uuid, on=True))

    async def power_off(self, instance_uuid: str) -> TaskState | None:
        return await self._operation(lambda c: operations.power(c, instance_uuid, on=False))

    async def create_vm(self, spec: NewVM) -> TaskState | str:
        return await self._operation(lambda c: operations.create_vm(c, spec))

    async def attach_disks(
        self,
        instance_uuid: str,
        files: Sequence[str],
        new: Sequence[NewDisk] = (),
        sizes: Mapping[str, int] | None = None,
    ) -> TaskState | None:
        return await self._operation(
            lambda c: operations.attach_disks(c, instance_uuid, files, new, sizes)
        )

    async def detach_disks(self, instance_uuid: str, files: Sequence[str]) -> TaskState | None:
        return await self._operation(lambda c: operations.detach_disks(c, instance_uuid, files))

    async def make_directory(self, datacenter: str, path: str) -> None:
        await self._operation(lambda c: operations.make_directory(c, datacenter, path))

    async def enable_change_tracking(self, instance_uuid: str) -> TaskState | None:
        return await self._operation(lambda c: operations.enable_change_tracking(c, instance_uuid))

    async def create_snapshot(
        self, instance_uuid: str, name: str, *, description: str = "", quiesce: bool = False
    ) -> TaskState | str:
        return await self._operation(
            lambda c: operations.create_snapshot(c, instance_uuid, name, description, quiesce)
        )

    async def remove_snapshot(self, snapshot: str) -> TaskState | None:
        return await self._operation(lambda c: operations.remove_snapshot(c, snapshot))

    async def snapshots(self, instance_uuid: str) -> tuple[SnapshotInfo, ...]:
        return await self.call(lambda c: operations.snapshots(c, instance_uuid))

    async def snapshot_disks(self, snapshot: str) -> tuple[SnapshotDisk, ...]:
        return await self.call(lambda c: operations.snapshot_disks(c, snapshot))

    async def query_changed_areas(
        self, instance_uuid: str, snapshot: str, device_key: int, start_offset: int, change_id: str
    ) -> DiskChangeInfo:
        return await self.call(
            lambda c: operations.query_changed_areas(
                c, instance_uuid, snapshot, device_key, start_offset, change_id, self.server
            )
        )

    async def task(self, moref: str) -> TaskState:
        return await self.call(lambda c: operations.task_state(c, moref))

    async def wait(self, moref: str, patience: float) -> TaskState:
        """Poll the task (one PropertyCollector read each time) until it ends."""
        deadline = time.monotonic() + patience
        delay = 0.1
        while True:
            state = await self.task(moref)
            if state.done or time.monotonic() >= deadline:
                if state.done:
                    self.invalidate()
                return state
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


class Sessions:
    """The session cache (implements ``ports.vsphere.VCenters``); lives in kopf's memo.

    One client per server, user *and* credentials: two Secrets for one account (one with
    a CA bundle, one with a thumbprint; or one with an outdated password) get a client
    each instead of logging each other out on every pass. A client no object asked for
    in ``idle_logout`` seconds (its Secret was rotated or deleted) is logged out.
    """

    def __init__(
        self,
        *,
        max_concurrency: int = 8,
        inventory_max_age: float = 20.0,
        check_interval: float = 60.0,
        timeout: float = 60.0,
        threads: int = 16,
        idle_logout: float = 600.0,
    ) -> None:
        self._clients: dict[vs.VCenterCredentials, Client] = {}
        self._used: dict[vs.VCenterCredentials, float] = {}
        self._idle_logout = idle_logout
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="vsphere")
        self._options: Mapping[str, Any] = {
            "max_concurrency": max_concurrency,
            "inventory_max_age": inventory_max_age,
            "check_interval": check_interval,
            "timeout": timeout,
        }

    async def connect(self, credentials: vs.VCenterCredentials) -> Client:
        """The cached client for these credentials, logged in."""
        async with self._lock:
            now = time.monotonic()
            idle = [
                c
                for key, c in self._clients.items()
                if key != credentials and now - self._used[key] > self._idle_logout
            ]
            for stale in idle:
                del self._clients[stale.credentials], self._used[stale.credentials]
            found = self._clients.get(credentials)
            if found is None:
                found = Client(credentials, self._executor, **self._options)
                self._clients[credentials] = found
            client = found
            self._used[credentials] = now
        loop = asyncio.get_running_loop()
        for old in idle:
            log.info("vCenter %s: logging out a session no object uses", old.server)
            await loop.run_in_executor(self._executor, old.logout)
        await client.call(lambda content: None)  # log in, or check an idle session
        return client

    def clients(self) -> list[Client]:
        return list(self._clients.values())

    async def close(self) -> None:
        """Log every session out and stop the threads."""
        async with self._lock:
            clients, self._clients, self._used = list(self._clients.values()), {}, {}
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._executor, c.logout) for c in clients),
            return_exceptions=True,
        )
        self._executor.shutdown(wait=False, cancel_futures=True)


def _implements(sessions: Sessions, client: Client) -> tuple[VCenters, VCenter]:
    """Never called: mypy checks here that these classes implement the port."""
    return sessions, client
