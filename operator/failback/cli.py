"""The ``failback`` command: one entry point per process the product runs.

``failback operator`` runs the controllers, ``failback process-server`` and
``failback master-target`` run the data plane services, ``failback demo`` says how to
run the demo (``make demo``, from a source checkout: the test bed is not installed).
A verb whose capability has not landed yet says so and exits with status 3, so
scripts never mistake it for success.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from failback import __version__
from failback.settings import DEFAULT_PEERING, Settings

EXIT_NOT_BUILT = 3


class UsageError(Exception):
    """A command line that cannot run; the message says what to change."""


@dataclass(frozen=True)
class Verb:
    name: str
    summary: str
    pending: str | None  # why it cannot run yet, or None when it is built


VERBS: tuple[Verb, ...] = (
    Verb(
        "operator",
        "run the controllers (ProtectedVM, FailbackPlan, MasterTarget, ProcessServer)",
        None,
    ),
    Verb(
        "process-server",
        "run the process server: reads changed blocks and forwards them to a master target",
        None,
    ),
    Verb(
        "master-target",
        "run the master target: writes target disks and keeps the recovery-point journal",
        None,
    ),
    Verb(
        "plan",
        "what an SRE does with a FailbackPlan: status and step log, start, cancel, approve, "
        "dry run",
        None,
    ),
    Verb(
        "demo",
        "fail back the sample plan on the embedded test bed: `make demo` in a source checkout",
        None,
    ),
)


def _operator_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n",
        "--namespace",
        dest="namespaces",
        action="append",
        metavar="NAME",
        help="a namespace to serve (repeat for several); default: $FAILBACK_NAMESPACES "
        "(comma-separated), else the pod's own namespace from $POD_NAMESPACE",
    )
    parser.add_argument(
        "--peering",
        default=DEFAULT_PEERING,
        help="name of the KopfPeering object that keeps a second replica idle "
        f"(default: {DEFAULT_PEERING})",
    )
    parser.add_argument(
        "--standalone",
        action="store_true",
        help="run without peering (development only: nothing stops a second replica)",
    )
    parser.add_argument("--priority", type=int, default=0, help="peering priority (default: 0)")
    parser.add_argument(
        "--liveness",
        metavar="URL",
        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--recheck-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds between level-based re-checks of an unchanged object (default: 60)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics on this port at /metrics (default: not served)",
    )
    parser.add_argument(
        "--recheck-idle",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long an object must stay unchanged before its re-check (default: 10)",
    )
    parser.add_argument(
        "--replication-interval",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="seconds between two replication cycles of a VM; at most a third of its "
        "spec.policy.rpoThreshold is used (default: 300)",
    )
    azure = parser.add_argument_group("Azure (defaults: the public cloud)")
    azure.add_argument(
        "--azure-arm-endpoint",
        metavar="URL",
        help="Azure Resource Manager endpoint (another cloud, Azure Stack, the test bed)",
    )
    azure.add_argument("--azure-authority", metavar="URL", help="Microsoft Entra ID authority host")
    azure.add_argument(
        "--azure-ca-file",
        metavar="FILE",
        help="CA bundle that signs ARM's and the authority's certificates (default: system)",
    )
    azure.add_argument(
        "--azure-writes-per-hour",
        type=float,
        default=1000.0,
        metavar="N",
        help="client-side cap on ARM writes per principal and subscription (default: 1000, "
        "under Azure's 1,200)",
    )
    azure.add_argument(
        "--azure-poll-interval",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="seconds between polls of a long-running Azure operation when Azure gives no "
        "Retry-After (default: 15)",
    )
    vsphere = parser.add_argument_group("vSphere")
    vsphere.add_argument(
        "--vsphere-max-concurrency",
        type=int,
        default=8,
        metavar="N",
        help="vCenter operations in flight at once, per vCenter (default: 8)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument(
        "--log-format",
        choices=("json", "text"),
        default="json",
        help="json (default; one object per line) or text",
    )


def _master_target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        default="0.0.0.0:9443",
        metavar="HOST:PORT",
        help="address and port of the HTTPS API and data channel (default: 0.0.0.0:9443)",
    )
    parser.add_argument("--cert", required=True, metavar="FILE", help="PEM server certificate")
    parser.add_argument("--key", required=True, metavar="FILE", help="PEM key of --cert")
    parser.add_argument(
        "--client-ca",
        required=True,
        metavar="FILE",
        help="PEM CA: only clients with a certificate it signed are answered (mutual TLS)",
    )
    parser.add_argument(
        "--retention-dir",
        required=True,
        metavar="DIR",
        help="directory on the retention volume; each group's journal is DIR/GROUP",
    )
    parser.add_argument(
        "--disk",
        dest="disks",
        action="append",
        metavar="ID[=PATH]",
        help="a target disk (repeatable, optional: the operator registers groups with "
        "PUT /v1/groups/NAME): its disk UUID, found by --disk-resolver, or ID=PATH to name "
        "its device or flat image",
    )
    parser.add_argument(
        "--disk-resolver",
        default="by-id",
        metavar="RESOLVER",
        help="how a --disk given by UUID alone is found: by-id (default: "
        "/dev/disk/by-id/wwn-0x<hex> or scsi-3<hex>), by-id:DIR, or "
        "datastore:DIR[,datacenter=MOID][,datastore=NAME] (a datastore folder, as vcsim keeps it)",
    )
    parser.add_argument(
        "--group",
        dest="groups",
        action="append",
        default=[],
        metavar="NAME=DISKID,DISKID",
        help="a consistency group and its disks (repeatable); default: one group "
        "'default' with every disk",
    )
    parser.add_argument(
        "--capacity",
        metavar="BYTES",
        help="the most each group's journal may hold, e.g. 500Gi (default: 1Ti)",
    )
    parser.add_argument(
        "--retention",
        default="24h",
        metavar="DURATION",
        help="keep recovery points this long after the newest one (default: 24h)",
    )
    parser.add_argument(
        "--first-cycle",
        choices=("direct", "journal"),
        default="direct",
        help="initial copy written to the disks directly (default) or through the journal",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")


def _process_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        default="0.0.0.0:9443",
        metavar="HOST:PORT",
        help="address and port of the HTTPS control API (default: 0.0.0.0:9443)",
    )
    parser.add_argument(
        "--cert",
        required=True,
        metavar="FILE",
        help="PEM certificate: served to the operator, presented to master targets",
    )
    parser.add_argument("--key", required=True, metavar="FILE", help="PEM key of --cert")
    parser.add_argument(
        "--client-ca",
        required=True,
        metavar="FILE",
        help="PEM CA: only clients with a certificate it signed are answered (mutual TLS)",
    )
    parser.add_argument(
        "--mt-ca",
        metavar="FILE",
        help="PEM CA that signed the master targets' certificates (default: --client-ca)",
    )
    parser.add_argument(
        "--state-dir",
        required=True,
        metavar="DIR",
        help="where sessions' state is kept (the PS's cache volume)",
    )
    parser.add_argument(
        "--azure-credentials",
        required=True,
        metavar="DIR",
        help="a mounted Secret: files tenantId, clientId and clientSecret (or clientCertificate)",
    )
    parser.add_argument("--azure-arm-endpoint", metavar="URL", help="Azure Resource Manager URL")
    parser.add_argument("--azure-authority", metavar="URL", help="Microsoft Entra authority URL")
    parser.add_argument(
        "--azure-ca-file",
        metavar="FILE",
        help="PEM CA for Azure endpoints (a private or test endpoint); default: the system's",
    )
    parser.add_argument(
        "--azure-writes-per-hour",
        type=float,
        default=1000.0,
        metavar="N",
        help="ARM writes per hour this PS allows itself (default: 1000, under Azure's 1200)",
    )
    parser.add_argument(
        "--azure-poll-interval",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="seconds between polls of a long-running Azure operation (default: 15)",
    )
    parser.add_argument(
        "--snapshot-rate",
        default="7/5m",
        metavar="COUNT/DURATION",
        help="at most COUNT snapshots of one disk per DURATION (default: 7/5m, Azure's)",
    )
    parser.add_argument(
        "--max-queue",
        default="64Mi",
        metavar="BYTES",
        help="encoded batches a session may hold while the MT is slow (default: 64Mi)",
    )
    parser.add_argument(
        "--batch-size", default="16Mi", metavar="BYTES", help="data per batch (default: 16Mi)"
    )
    parser.add_argument(
        "--compression-level",
        type=int,
        default=1,
        metavar="N",
        help="zstd level on the wire, 0 to send uncompressed (default: 1)",
    )
    parser.add_argument(
        "--vcenter-credentials",
        metavar="DIR",
        help="OnPremToAzure: a mounted vCenter Secret (server, username, password, caBundle "
        "or thumbprint)",
    )
    parser.add_argument(
        "--datastore",
        dest="datastores",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="OnPremToAzure: a datastore this PS reads and where it is mounted (repeatable)",
    )
    parser.add_argument(
        "--change-tracking",
        choices=("vcenter", "sidecar"),
        default="vcenter",
        help="OnPremToAzure: changed areas from vCenter CBT (default) or the test bed's sidecar",
    )
    parser.add_argument(
        "--control-plane",
        metavar="HOST:PORT",
        default=_in_cluster_api(),
        help="the Kubernetes API this PS must reach (R-PRE-12); default: the in-cluster one",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")


def _in_cluster_api() -> str | None:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    return f"{host}:{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}" if host else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="failback",
        description="Bring virtual machines home from Azure to on-premises VMware.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in VERBS:
        sub = verbs.add_parser(verb.name, help=verb.summary, description=verb.summary)
        if verb.name == "operator":
            _operator_arguments(sub)
        elif verb.name == "master-target":
            _master_target_arguments(sub)
        elif verb.name == "process-server":
            _process_server_arguments(sub)
        elif verb.name == "plan":
            _plan_arguments(sub)
    return parser


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=("status", "start", "failover", "cancel", "approve", "dry-run"),
        help="status: phase, conditions and step log; start: spec.activeSite=OnPrem; "
        "failover: spec.activeSite=Azure after a committed failback; cancel: spec.activeSite "
        "back to status.committedSite (before commit); approve: commit the current run "
        "(Manual commit); dry-run: spec.dryRun=true (--off: false)",
    )
    parser.add_argument("name", help="the FailbackPlan")
    parser.add_argument("-n", "--namespace", default="failback-system", help="its namespace")
    parser.add_argument("--kubeconfig", metavar="FILE", help="default: in-cluster, or ~/.kube")
    parser.add_argument("--off", action="store_true", help="with dry-run: set it to false")


def operator_settings(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    """The operator's settings from its flags, with the pod's environment as fallback."""
    namespaces: list[str] = list(args.namespaces or [])
    if not namespaces and environ.get("FAILBACK_NAMESPACES"):
        namespaces = [n.strip() for n in environ["FAILBACK_NAMESPACES"].split(",") if n.strip()]
    if not namespaces and environ.get("POD_NAMESPACE"):
        namespaces = [environ["POD_NAMESPACE"]]
    if not namespaces:
        raise UsageError(
            "no namespace to serve: pass --namespace NAME (repeatable), or set "
            "FAILBACK_NAMESPACES or POD_NAMESPACE"
        )
    if args.recheck_interval <= 0:
        raise UsageError(f"--recheck-interval must be positive, not {args.recheck_interval:g}")
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        raise UsageError(f"--metrics-port must be a port from 1 to 65535, not {args.metrics_port}")
    if args.recheck_idle < 0:
        raise UsageError(f"--recheck-idle must not be negative, not {args.recheck_idle:g}")
    if args.replication_interval <= 0:
        raise UsageError(
            f"--replication-interval must be positive, not {args.replication_interval:g}"
        )
    if args.azure_writes_per_hour <= 0:
        raise UsageError(
            f"--azure-writes-per-hour must be positive, not {args.azure_writes_per_hour:g}"
        )
    if args.azure_poll_interval <= 0:
        raise UsageError(
            f"--azure-poll-interval must be positive, not {args.azure_poll_interval:g}"
        )
    if args.vsphere_max_concurrency < 1:
        raise UsageError(
            f"--vsphere-max-concurrency must be at least 1, not {args.vsphere_max_concurrency}"
        )
    if args.azure_ca_file and not os.path.isfile(args.azure_ca_file):
        raise UsageError(f"--azure-ca-file {args.azure_ca_file}: no such file")
    return Settings(
        namespaces=tuple(dict.fromkeys(namespaces)),
        peering=args.peering,
        standalone=args.standalone,
        priority=args.priority,
        liveness_endpoint=args.liveness,
        recheck_interval=args.recheck_interval,
        recheck_idle=args.recheck_idle,
        metrics_port=args.metrics_port,
        replication_interval=args.replication_interval,
        instance=environ.get("POD_NAME") or environ.get("HOSTNAME") or "failback-operator",
        azure_arm_endpoint=args.azure_arm_endpoint,
        azure_authority=args.azure_authority,
        azure_ca_file=args.azure_ca_file,
        azure_writes_per_hour=args.azure_writes_per_hour,
        azure_poll_interval=args.azure_poll_interval,
        vsphere_max_concurrency=args.vsphere_max_concurrency,
    )


def run_operator(args: argparse.Namespace) -> int:
    # Imported here: `failback --help` and the data-plane verbs must not load kopf.
    import asyncio

    import kopf

    from failback.controllers import runtime

    settings = operator_settings(args, dict(os.environ))
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
    )
    if not args.verbose:
        # The Azure SDK logs every request at INFO (URL and header names): noise at 3 a.m.
        logging.getLogger("azure").setLevel(logging.WARNING)
    asyncio.run(runtime.run(settings))
    return 0


def run_master_target(args: argparse.Namespace) -> int:
    # Imported here: the operator's process never loads the data plane.
    from failback.dataplane import mt

    try:
        config = mt.build_config(
            listen=args.listen,
            cert=args.cert,
            key=args.key,
            client_ca=args.client_ca,
            retention_dir=args.retention_dir,
            disks=args.disks,
            disk_resolver=args.disk_resolver,
            groups=args.groups,
            capacity=args.capacity,
            retention=args.retention,
            first_cycle=args.first_cycle,
        )
    except mt.ConfigError as exc:
        raise UsageError(str(exc)) from exc
    try:
        return mt.serve(config, verbose=args.verbose)
    except mt.StartupError as exc:
        print(f"failback master-target: cannot start: {exc}", file=sys.stderr)
        return 1


def _read_secret_dir(flag: str, directory: str) -> dict[str, str]:
    """A mounted Secret: one file per key (Kubernetes' hidden ``..data`` entries skipped)."""
    path = Path(directory)
    if not path.is_dir():
        raise UsageError(f"{flag} {directory}: not a directory (mount the Secret)")
    return {
        f.name: f.read_text()
        for f in sorted(path.iterdir())
        if not f.name.startswith(".") and f.is_file()
    }


def run_process_server(args: argparse.Namespace) -> int:
    # Imported here: the operator's process never loads the data plane.
    from failback.adapters.azure.clients import ARM_ENDPOINT, AzureClientsAdapter, AzureOptions
    from failback.adapters.azure.credentials import SecretKeyMissing, identity_from_secret
    from failback.dataplane import mt, ps
    from failback.domain.vsphere import SecretProblem, parse_vcenter_secret
    from failback.errors import Permanent
    from failback.ports.azure import AzureCompute
    from failback.ports.vsphere import VCenter

    try:
        config = ps.build_config(
            listen=args.listen,
            cert=args.cert,
            key=args.key,
            client_ca=args.client_ca,
            mt_ca=args.mt_ca,
            state_dir=args.state_dir,
            max_queue=args.max_queue,
            batch_size=args.batch_size,
            compression_level=args.compression_level,
            snapshot_rate=args.snapshot_rate,
            control_plane=args.control_plane,
            blob_ca_file=args.azure_ca_file,
            datastores=tuple(args.datastores),
            change_tracking=args.change_tracking,
        )
    except mt.ConfigError as exc:
        raise UsageError(str(exc)) from exc
    if args.azure_writes_per_hour <= 0 or args.azure_poll_interval <= 0:
        raise UsageError("--azure-writes-per-hour and --azure-poll-interval must be positive")
    try:
        identity = identity_from_secret(
            _read_secret_dir("--azure-credentials", args.azure_credentials)
        )
    except SecretKeyMissing as exc:
        raise UsageError(f"--azure-credentials {args.azure_credentials}: {exc}") from exc
    adapter = AzureClientsAdapter(
        AzureOptions(
            arm_endpoint=args.azure_arm_endpoint or ARM_ENDPOINT,
            authority=args.azure_authority,
            ca_file=args.azure_ca_file,
            poll_interval=args.azure_poll_interval,
            writes_per_hour=args.azure_writes_per_hour,
        )
    )

    async def compute_for(subscription_id: str) -> AzureCompute:
        return await adapter.compute(identity, subscription_id)

    vcenter_for = None
    closers = [adapter.close]
    if args.vcenter_credentials:
        # Imported here: pyVmomi is loaded only by a PS that replicates OnPremToAzure.
        from failback.adapters.vsphere.session import Sessions

        sessions = Sessions()
        closers.append(sessions.close)
        try:
            vcenter = parse_vcenter_secret(
                _read_secret_dir("--vcenter-credentials", args.vcenter_credentials)
            )
        except SecretProblem as exc:
            raise UsageError(f"--vcenter-credentials {args.vcenter_credentials}: {exc}") from exc

        async def connect(server: str) -> VCenter:
            if server.lower() != vcenter.server.lower():
                raise Permanent(
                    f"this process server holds credentials for vCenter {vcenter.server}, "
                    f"not {server}"
                )
            return await sessions.connect(vcenter)

        vcenter_for = connect

    async def closing() -> None:
        for close in closers:
            await close()

    try:
        return ps.serve(
            config, compute_for, vcenter_for=vcenter_for, verbose=args.verbose, closing=closing
        )
    except ps.StartupError as exc:
        print(f"failback process-server: cannot start: {exc}", file=sys.stderr)
        return 1


def run_plan(args: argparse.Namespace) -> int:
    from failback import planctl

    try:
        plans = planctl.Plans(planctl.connect(args.kubeconfig), args.namespace)
        if args.action == "status":
            print(planctl.status_text(plans.get(args.name)))
        elif args.action == "dry-run":
            print(planctl.dry_run(plans, args.name, on=not args.off))
        else:
            print(planctl.VERBS[args.action](plans, args.name))
    except planctl.PlanError as exc:
        print(f"failback plan {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


EXIT_DEMO_ELSEWHERE = 2
DEMO_ELSEWHERE = (
    "failback demo: the demo runs from a source checkout of failback-operator, not from "
    "the installed package (the embedded test bed, hack/testbed, is not installed): clone "
    "the repository and run `make demo` there; `make down` stops it."
)


def run_demo(args: argparse.Namespace) -> int:
    print(DEMO_ELSEWHERE, file=sys.stderr)
    return EXIT_DEMO_ELSEWHERE


RUNNERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "operator": run_operator,
    "process-server": run_process_server,
    "plan": run_plan,
    "master-target": run_master_target,
    "demo": run_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verb = next(v for v in VERBS if v.name == args.verb)
    if verb.pending is not None:
        print(f"failback {verb.name}: not available yet: {verb.pending}.", file=sys.stderr)
        return EXIT_NOT_BUILT
    try:
        return RUNNERS[verb.name](args)
    except UsageError as exc:
        parser.exit(2, f"failback {verb.name}: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
