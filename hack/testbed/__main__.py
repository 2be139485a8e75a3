"""``python -m testbed build | up | demo | down | env`` (with ``hack`` on PYTHONPATH)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from testbed import bed, build, demo
from testbed import operator as operator_
from testbed.procs import TestbedError

REPO = build.REPO


def _print_env(tb: bed.Testbed) -> None:
    for key, value in tb.env().items():
        # $(cat FILE) and $PATH are meant to be expanded by the shell that evals this.
        quoted = f'"{value}"' if "$" in value else shlex.quote(value)
        print(f"export {key}={quoted}")


def _start_operator(tb: bed.Testbed) -> tuple[bed.Testbed, str]:
    """Install the manifests and samples, start the operator, and show what it reports."""
    kubectl = tb.kubectl()
    operator_.install(kubectl)
    operator = operator_.start(tb.kube, tb.root / "operator")
    tb = tb.with_operator(operator)
    tb.save()  # before waiting: `down` must find the operator to stop it
    operator_.wait_reconciled(kubectl, operator)
    listed = kubectl.run("get", "failback", "-n", operator_.NAMESPACE).stdout
    return tb, listed


def _operator_summary(tb: bed.Testbed, listed: str) -> list[str]:
    if tb.operator is None:
        return []
    return [
        "",
        f"failback operator (pid {tb.operator.pid}) serves namespace {tb.operator.namespace},",
        "running as its ServiceAccount with the RBAC of manifests/rbac.yaml; log:",
        f"  {tb.operator.log_file}",
        "The samples of manifests/samples/ as it reports them (kubectl get failback):",
        *(f"  {line}" for line in listed.rstrip().splitlines()),
    ]


def _summary(tb: bed.Testbed, crds: list[str], listed: str = "") -> str:
    state = tb.root / bed.STATE_FILE
    lines = [
        "The failback test bed is up. Every component listens on 127.0.0.1 and serves TLS",
        f"signed by the test bed's CA ({tb.kube.ca_file}).",
        "",
        f"  Kubernetes  {tb.kube.server}  (etcd + kube-apiserver, RBAC on)",
        f"              kubectl: {tb.kubectl_binary} --kubeconfig {tb.kube.kubeconfig} get ns",
        f"  vCenter     {tb.vcenter.url}  (vcsim; user {tb.vcenter.username},",
        f"              password in {tb.vcenter.password_file})",
        f"  Azure       {tb.azure.arm_url}  (ARM, identity and blob emulator;",
        f"              tenant {tb.azure.tenant_id}, client {tb.azure.client_id},",
        f"              secret in {tb.azure.client_secret_file},",
        f"              control API {tb.azure.endpoint}/_emulator)",
        f"  Helm        {tb.helm_binary}",
        "",
        "CRDs installed: " + (", ".join(crds) if crds else "none yet (crds/ is empty)"),
        *_operator_summary(tb, listed),
        "",
        "Point your shell at it:",
        f'  eval "$(PYTHONPATH={REPO / "hack"} {sys.executable} -m testbed env)"',
        "Stop it:",
        "  make down",
        f"State: {state}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="testbed", description=__doc__)
    parser.add_argument(
        "--root", type=Path, default=None, help="run folder of the test bed (default: .testbed/run)"
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("build", help="build the binaries into the cache (first run only)")
    up = verbs.add_parser("up", help="start every component detached and install the CRDs")
    up.add_argument(
        "--with-operator",
        action="store_true",
        help="also install manifests/ and the samples, and run `failback operator`",
    )
    shown = verbs.add_parser(
        "demo",
        help="start the test bed and fail the sample plan back on it, shown live (make demo)",
    )
    shown.add_argument(
        "--plain",
        action="store_true",
        help="append changed lines instead of redrawing in place (default when not a terminal)",
    )
    verbs.add_parser("down", help="stop every component and remove the run folder")
    verbs.add_parser("env", help="print shell exports pointing at the running test bed")
    args = parser.parse_args(argv)
    root: Path = args.root or bed.default_run_dir()
    try:
        if args.verb == "build":
            bins = build.build_all()
            print(f"test bed binaries ready in {bins.kube_apiserver.parent.parent}")
        elif args.verb == "up":
            tb = bed.up(root)
            listed = ""
            try:
                crds = operator_.install_crds(tb.kubectl())
                if args.with_operator:
                    tb, listed = _start_operator(tb)
            except BaseException:
                bed.down(root)
                raise
            print(_summary(tb, crds, listed))
        elif args.verb == "demo":
            tb = bed.up(root)
            try:
                crds = operator_.install_crds(tb.kubectl())
            except BaseException:
                bed.down(root)
                raise
            print(_summary(tb, crds), flush=True)
            return demo.run(tb, sys.stdout, tty=False if args.plain else None)
        elif args.verb == "down":
            bed.down(root)
            print(f"test bed in {root} stopped")
        else:
            tb_running = bed.running(root / bed.STATE_FILE)
            if tb_running is None:
                raise TestbedError(f"no live test bed in {root}; start one with `make demo`")
            _print_env(tb_running)
    except TestbedError as exc:
        print(f"testbed {args.verb}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
