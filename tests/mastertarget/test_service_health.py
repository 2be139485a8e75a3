"""The MasterTarget's service checks against a REAL `failback master-target` process: the
operator's client (``adapters.mastertarget``) asks ``GET /v1/health`` over mutual TLS with
the Secret of ``spec.tlsSecretRef``, and the service layer judges ``ServiceReachable``,
``RetentionVolumeValid`` (R-PRE-5) and ``VersionCompatible`` (R-PRE-18) and fills
``status.version`` and ``status.retentionVolume``.

Certificates come from the test bed's CA (``testbed.pki.Pki``) in ``tmp_path``; the target
disk is a flat file there. The Secrets are read by the real reader from the test bed's API
server, and vCenter is vcsim (the VM is not there: the vSphere checks say VMNotFound, which
these tests do not look at).

``tmp_path`` is on the root file system, like this checkout (the service's install): a
retention directory there is *not dedicated*, which is what the shared-volume test uses.
The good case needs a volume of its own: a directory on ``/dev/shm`` (a tmpfs).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import failback
from failback.adapters.kubernetes import KubeReads
from failback.adapters.mastertarget.client import HealthClient
from failback.adapters.vsphere import Sessions
from failback.api import mastertarget as api
from failback.api.conditions import ConditionType as CT
from failback.dataplane.mt import volume as mt_volume
from failback.services import mastertarget as service
from testbed.pki import Pki
from testbed.procs import free_port, log_tail, spawn, wait_until
from testbed.vcsim import VCenter

FAILBACK = Path(sys.executable).parent / "failback"
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
SHM = Path("/dev/shm")
OUTSIDE = "answered /v1/health outside its contract:"


# ---------------------------------------------------------------------- harness


def put_secret(k8s_client: Any, namespace: str, name: str, data: dict[str, str]) -> None:
    import base64

    from kubernetes import client

    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    client.CoreV1Api(k8s_client).create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=name), data=encoded)
    )


def operator_tls(pki: Pki, ca: Pki | None = None) -> dict[str, str]:
    """The operator's Secret: a client certificate of ``pki``, and ``ca``'s CA (``pki``'s
    when not given) to verify the service with."""
    pair = pki.client("operator", "failback-operator")
    return {
        "tls.crt": pair.cert.read_text(),
        "tls.key": pair.key.read_text(),
        "ca.crt": (ca or pki).ca_file.read_text(),
    }


@contextlib.contextmanager
def master_target_service(root: Path, retention: Path, pki: Pki) -> Iterator[str]:
    """`failback master-target` on a free port with one flat disk; yields its endpoint."""
    port = free_port()
    server = pki.serving("mt")
    disk = root / "disk0.flat"
    disk.write_bytes(bytes(1 << 20))
    log = root / "mt.log"
    argv = [
        str(FAILBACK), "master-target", "--listen", f"127.0.0.1:{port}",
        "--cert", str(server.cert), "--key", str(server.key), "--client-ca", str(pki.ca_file),
        "--retention-dir", str(retention), "--disk", f"disk0={disk}",
    ]  # fmt: skip
    proc = spawn(argv, log)

    def listening() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    try:
        wait_until(listening, what="failback master-target", log=log, proc=proc, timeout=30)
        yield f"https://127.0.0.1:{port}"
    finally:
        proc.terminate()
        code = proc.wait(timeout=15)
        assert code == 0, f"the service exited with {code}:\n{log_tail(log)}"


def master_target(
    namespace: str, endpoint: str, status: dict[str, Any] | None = None, **spec: Any
) -> api.MasterTarget:
    body = {
        "metadata": {"name": "mt", "namespace": namespace, "uid": "u1", "generation": 1},
        "spec": {
            "vcenterSecretRef": {"name": "vcenter"},
            "vm": {"instanceUUID": str(uuid.uuid4())},
            "osType": "Linux",
            "endpoint": endpoint,
            "tlsSecretRef": {"name": "mt-tls"},
            **spec,
        },
        "status": status or {},
    }
    return api.parse(body)


def conds(status: api.MasterTargetStatus) -> dict[str, tuple[str, str, str]]:
    return {c.type: (c.status, c.reason, c.message) for c in status.conditions}


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def ns(k8s_client: Any, namespace: str, vcenter: VCenter) -> str:
    put_secret(k8s_client, namespace, "vcenter", {
        "server": f"{vcenter.host}:{vcenter.port}",
        "username": vcenter.username,
        "password": vcenter.password,
        "caBundle": vcenter.ca_file.read_text(),
    })  # fmt: skip
    return namespace


@pytest.fixture
async def check(k8s_client: Any) -> AsyncIterator[Any]:
    """One pass of the MasterTarget service with the real clients."""
    secrets = KubeReads(k8s_client)
    sessions = Sessions(timeout=10)
    health = HealthClient(timeout=2.0)

    async def run(mt: api.MasterTarget) -> api.MasterTargetStatus:
        return await service.reconcile(mt, secrets, sessions, health, NOW)

    try:
        yield run
    finally:
        await health.close()
        await sessions.close()


@pytest.fixture
def dedicated_dir() -> Iterator[Path]:
    """A retention directory on a volume of its own (tmpfs), not the install volume."""
    if not SHM.is_dir() or not os.access(SHM, os.W_OK):
        pytest.fail(
            "this test needs a writable /dev/shm (a tmpfs: a volume that is not the install "
            "volume) for a dedicated retention volume; mount one, e.g. "
            "`mount -t tmpfs tmpfs /dev/shm`"
        )
    directory = Path(tempfile.mkdtemp(prefix="failback-retention-", dir=SHM))
    try:
        if mt_volume.inspect(directory).shares_install_volume:
            pytest.skip("/dev/shm is on the install volume here")
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------------- tests


async def test_a_reachable_service_on_a_dedicated_volume(
    ns: str, k8s_client: Any, check: Any, pki: Pki, tmp_path: Path, dedicated_dir: Path
) -> None:
    put_secret(k8s_client, ns, "mt-tls", operator_tls(pki))
    retention = dedicated_dir / "journals"
    with master_target_service(tmp_path, retention, pki) as endpoint:
        status = await check(master_target(ns, endpoint, retentionVolume=str(SHM)))
    c = conds(status)
    assert c[CT.REFERENCES_RESOLVED][0] == "True"
    assert c[CT.SERVICE_REACHABLE] == (
        "True",
        "Connected",
        f"The master target service answered at {endpoint} over mutual TLS "
        f"(version {failback.__version__}).",
    )
    state, reason, message = c[CT.RETENTION_VOLUME_VALID]
    assert (state, reason) == ("True", "CheckPassed"), message
    assert f"The retention volume {SHM} (tmpfs," in message
    assert f"journals in {retention.resolve()}" in message
    state, reason, message = c[CT.VERSION_COMPATIBLE]
    assert (state, reason) == ("True", "CheckPassed")
    assert failback.__version__ in message
    # The volume's facts, as the service measured them.
    assert status.version == failback.__version__
    volume = status.retention_volume
    assert volume is not None
    st = os.statvfs(SHM)
    assert volume.path == str(retention.resolve())
    assert volume.file_system == "tmpfs"
    assert volume.capacity_bytes == st.f_blocks * st.f_frsize
    assert 0 < volume.free_bytes <= volume.capacity_bytes
    stored = status.to_dict()
    assert stored["version"] == failback.__version__
    assert set(stored["retentionVolume"]) == {"path", "fileSystem", "capacityBytes", "freeBytes"}

    # The service stops: unreachable, the service's checks Unknown, its last facts kept.
    later = await check(master_target(ns, endpoint, status=stored, retentionVolume=str(SHM)))
    c = conds(later)
    state, reason, message = c[CT.SERVICE_REACHABLE]
    assert (state, reason) == ("False", "ConnectionFailed")
    assert f"{endpoint} did not answer: the connection was refused" in message
    for t in (CT.RETENTION_VOLUME_VALID, CT.VERSION_COMPATIBLE):
        assert c[t][:2] == ("Unknown", "ServiceCheckPending"), t
    assert later.phase == "Unreachable"
    assert later.version == failback.__version__
    assert later.retention_volume == volume


async def test_a_wrong_ca_fails_tls_verification(
    ns: str, k8s_client: Any, check: Any, pki: Pki, tmp_path: Path, dedicated_dir: Path
) -> None:
    stranger = Pki(tmp_path / "other-ca")
    put_secret(k8s_client, ns, "mt-tls", operator_tls(stranger))
    with master_target_service(tmp_path, dedicated_dir, pki) as endpoint:
        c = conds(await check(master_target(ns, endpoint, retentionVolume=str(SHM))))
    state, reason, message = c[CT.SERVICE_REACHABLE]
    assert (state, reason) == ("False", "TLSVerificationFailed")
    assert f"The certificate of {endpoint} does not verify against ca.crt" in message
    for t in (CT.RETENTION_VOLUME_VALID, CT.VERSION_COMPATIBLE):
        assert c[t][:2] == ("Unknown", "ServiceCheckPending"), t


async def test_a_client_certificate_the_service_does_not_trust(
    ns: str, k8s_client: Any, check: Any, pki: Pki, tmp_path: Path, dedicated_dir: Path
) -> None:
    """The right CA for the service, but the operator's certificate is another CA's. With
    TLS 1.3 the service refuses it after the client's side of the handshake, which the
    client sees as a reset (ConnectionFailed) or, racing, as the TLS alert."""
    put_secret(k8s_client, ns, "mt-tls", operator_tls(Pki(tmp_path / "other-ca"), ca=pki))
    with master_target_service(tmp_path, dedicated_dir, pki) as endpoint:
        c = conds(await check(master_target(ns, endpoint, retentionVolume=str(SHM))))
    state, reason, message = c[CT.SERVICE_REACHABLE]
    assert state == "False"
    assert reason in ("ConnectionFailed", "TLSVerificationFailed"), message
    assert endpoint in message
    assert "client certificate" in message


async def test_nothing_listening(ns: str, k8s_client: Any, check: Any, pki: Pki) -> None:
    put_secret(k8s_client, ns, "mt-tls", operator_tls(pki))
    endpoint = f"https://127.0.0.1:{free_port()}"
    status = await check(master_target(ns, endpoint))
    c = conds(status)
    state, reason, message = c[CT.SERVICE_REACHABLE]
    assert (state, reason) == ("False", "ConnectionFailed")
    assert message.startswith(f"{endpoint} did not answer: the connection was refused (is the")
    for t in (CT.RETENTION_VOLUME_VALID, CT.VERSION_COMPATIBLE):
        assert c[t][:2] == ("Unknown", "ServiceCheckPending"), t
    assert "has not answered (see ServiceReachable)" in c[CT.RETENTION_VOLUME_VALID][2]
    assert status.version is None
    assert status.retention_volume is None


async def test_a_silent_endpoint_times_out(ns: str, k8s_client: Any, check: Any, pki: Pki) -> None:
    """A listener that never completes the TLS handshake: the client's 2 s timeout."""
    put_secret(k8s_client, ns, "mt-tls", operator_tls(pki))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        endpoint = f"https://127.0.0.1:{listener.getsockname()[1]}"
        c = conds(await check(master_target(ns, endpoint)))
    state, reason, message = c[CT.SERVICE_REACHABLE]
    assert (state, reason) == ("False", "ConnectionFailed")
    assert message.startswith(f"{endpoint} did not answer within 2 s")


async def test_retention_on_the_install_volume(
    ns: str, k8s_client: Any, check: Any, pki: Pki, tmp_path: Path
) -> None:
    retention = tmp_path / "retention"
    retention.mkdir()
    facts = mt_volume.inspect(retention)
    if not facts.shares_install_volume:
        pytest.skip("tmp_path is not on the install volume here; the unit tests cover it")
    put_secret(k8s_client, ns, "mt-tls", operator_tls(pki))
    with master_target_service(tmp_path, retention, pki) as endpoint:
        on_it = await check(master_target(ns, endpoint, retentionVolume=facts.mount_point))
        default = await check(master_target(ns, endpoint))
    state, reason, message = conds(on_it)[CT.RETENTION_VOLUME_VALID]
    assert (state, reason) == ("False", "RetentionVolumeNotDedicated")
    assert f"{retention.resolve()} (volume {facts.mount_point}, {facts.file_system}) is " in message
    assert "give the retention a dedicated volume" in message
    assert conds(on_it)[CT.SERVICE_REACHABLE][:2] == ("True", "Connected")
    assert on_it.retention_volume is not None
    assert on_it.retention_volume.file_system == facts.file_system
    # spec.retentionVolume left to the default: the journals are not on /mnt/retention.
    state, reason, message = conds(default)[CT.RETENTION_VOLUME_VALID]
    assert (state, reason) == ("False", "RetentionVolumeNotUsed")
    assert "not on the retention volume /mnt/retention" in message
    assert "installed on" in message


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        ({"version": "0.1.0"},
         f"{OUTSIDE} heartbeat must be an RFC 3339 time."),
        ({"version": "0.1.0", "heartbeat": "2026-11-23T12:00:00Z", "retentionVolume": {}},
         f"{OUTSIDE} retentionVolume.path must be a non-empty string."),
        ({"version": "9.9.9-x", "heartbeat": "2026-11-23T12:00:00Z"},
         f"{OUTSIDE} version '9.9.9-x' is not a version number like 0.1.0."),
        ("not json", "did not answer JSON."),
        (None, "answered HTTP 404 on /v1/health."),
    ],
)  # fmt: skip
async def test_an_answer_outside_the_contract(
    ns: str, k8s_client: Any, check: Any, pki: Pki, answer: Any, words: str
) -> None:
    """Another HTTPS service (mutual TLS, the right certificates) on the endpoint."""
    import ssl

    from aiohttp import web

    put_secret(k8s_client, ns, "mt-tls", operator_tls(pki))
    server = pki.serving("impostor")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_file))
    context.load_cert_chain(server.cert, server.key)
    context.verify_mode = ssl.CERT_REQUIRED

    async def health(_: web.Request) -> web.Response:
        if isinstance(answer, str):
            return web.Response(text=answer)
        return web.json_response(answer)

    app = web.Application()
    if answer is not None:
        app.router.add_get("/v1/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    endpoint = f"https://127.0.0.1:{port}"
    try:
        c = conds(await check(master_target(ns, endpoint)))
    finally:
        await runner.cleanup()
    assert c[CT.SERVICE_REACHABLE] == ("False", "UnexpectedAnswer", f"{endpoint} {words}"), c
    assert c[CT.RETENTION_VOLUME_VALID][:2] == ("Unknown", "ServiceCheckPending")
