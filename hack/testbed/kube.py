"""A real Kubernetes control plane: etcd + kube-apiserver on loopback, RBAC on.

No controller-manager and no scheduler (the envtest approach): objects are stored,
validated (schemas, CEL, RBAC, admission) and watched exactly as on a cluster, but
nothing runs pods and namespaces are never finalized. Tests use fresh namespaces.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from testbed.build import Binaries
from testbed.pki import Pki
from testbed.procs import TestbedError, free_port, spawn, stop, wait_until

ADMIN_USER = "testbed-admin"


@dataclass(frozen=True)
class Kube:
    """A running API server and the files needed to talk to it as the admin."""

    server: str
    ca_file: Path
    kubeconfig: Path
    client_cert: Path
    client_key: Path
    etcd_pid: int
    apiserver_pid: int


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_file: Path,
    user: str,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    token: str | None = None,
    namespace: str = "default",
) -> Path:
    """A kubeconfig with one cluster, one user (client certificate or token), one context."""
    credentials: dict[str, str] = {}
    if client_cert is not None and client_key is not None:
        credentials = {"client-certificate": str(client_cert), "client-key": str(client_key)}
    if token is not None:
        credentials = {"token": token}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "testbed",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [
            {"name": user, "context": {"cluster": "testbed", "user": user, "namespace": namespace}}
        ],
        "current-context": user,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def _ready(server: str, ctx: ssl.SSLContext) -> bool:
    with urllib.request.urlopen(f"{server}/readyz", context=ctx, timeout=5) as resp:  # noqa: S310
        return bool(resp.status == 200)


@contextmanager
def start_kube(workdir: Path, pki: Pki, bins: Binaries) -> Iterator[Kube]:
    """Start etcd and kube-apiserver; stop both (and drop their data) on exit."""
    kube = launch_kube(workdir, pki, bins)
    try:
        yield kube
    finally:
        stop(kube.apiserver_pid)
        stop(kube.etcd_pid)


def launch_kube(workdir: Path, pki: Pki, bins: Binaries) -> Kube:
    """Start etcd and kube-apiserver detached and wait until the API server is ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    client_port, peer_port, secure_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    etcd_log = workdir / "etcd.log"
    etcd = spawn(
        [
            str(bins.etcd),
            "--name=testbed",
            f"--data-dir={workdir / 'etcd-data'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=testbed={peer_url}",
            "--unsafe-no-fsync",  # a throwaway store: durability buys nothing here
            "--log-level=warn",
        ],
        etcd_log,
    )

    def etcd_ready() -> bool:
        with urllib.request.urlopen(f"{etcd_url}/health", timeout=2) as resp:  # noqa: S310
            return b'"true"' in resp.read()

    try:
        wait_until(etcd_ready, what="etcd", log=etcd_log, proc=etcd, timeout=60)
    except BaseException:
        stop(etcd.pid)
        raise

    serving = pki.serving("kube-apiserver", ("127.0.0.1", "localhost", "kubernetes.default.svc"))
    sa = pki.signing_key("service-accounts")
    admin = pki.client("kube-admin", ADMIN_USER, ("system:masters",))
    server = f"https://127.0.0.1:{secure_port}"
    api_log = workdir / "kube-apiserver.log"
    apiserver = spawn(
        [
            str(bins.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={secure_port}",
            f"--cert-dir={workdir / 'apiserver-certs'}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={pki.ca_file}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={server}",
            f"--service-account-key-file={sa.cert}",
            f"--service-account-signing-key-file={sa.key}",
            "--service-cluster-ip-range=10.96.0.0/24",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ],
        api_log,
    )
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    ctx.load_cert_chain(str(admin.cert), str(admin.key))
    try:
        wait_until(
            lambda: _ready(server, ctx),
            what="kube-apiserver",
            log=api_log,
            proc=apiserver,
            timeout=180,
        )
    except BaseException:
        stop(apiserver.pid)
        stop(etcd.pid)
        raise
    kubeconfig = write_kubeconfig(
        workdir / "admin.kubeconfig",
        server=server,
        ca_file=pki.ca_file,
        user=ADMIN_USER,
        client_cert=admin.cert,
        client_key=admin.key,
    )
    return Kube(
        server=server,
        ca_file=pki.ca_file,
        kubeconfig=kubeconfig,
        client_cert=admin.cert,
        client_key=admin.key,
        etcd_pid=etcd.pid,
        apiserver_pid=apiserver.pid,
    )


def service_account_kubeconfig(
    kube: Kube, namespace: str, name: str, path: Path, *, expiration_seconds: int = 3600
) -> Path:
    """A kubeconfig for ServiceAccount ``namespace/name``, created if missing.

    The token comes from the TokenRequest API, so it is bound and expiring like a
    projected token in a pod. What the account may do is only what RBAC grants it.
    """
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    api = client.CoreV1Api(config.new_client_from_config(str(kube.kubeconfig)))  # type: ignore[no-untyped-call]
    for create in (
        lambda: api.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
        ),
        lambda: api.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
        ),
    ):
        try:
            create()
        except ApiException as exc:
            if exc.status != 409:
                raise
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
    )
    status = api.create_namespaced_service_account_token(name, namespace, request).status
    if status is None or not status.token:
        raise TestbedError(f"the API server issued no token for {namespace}/{name}")
    token: str = status.token
    return write_kubeconfig(
        path,
        server=kube.server,
        ca_file=kube.ca_file,
        user=f"system:serviceaccount:{namespace}:{name}",
        token=token,
        namespace=namespace,
    )
