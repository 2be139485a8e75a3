"""Build the test bed's binaries from the Go module proxy into a git-ignored cache.

Kubernetes: a throwaway wrapper module requires ``k8s.io/kubernetes`` at the pinned
release and replaces each ``k8s.io/*`` staging module (which the release's go.mod
points at ``./staging/...``, unusable from outside) with its ``v0.x`` release. From
that one module graph we build ``kube-apiserver``, ``kubectl`` and ``etcd`` (at the
version Kubernetes itself requires). vcsim and helm are plain ``go install``.

Binaries land in ``<cache>/bin/<component>-<version>/``; a version already there is
not built again, so only the first run pays. Go's own module and build caches make
a rebuild after ``git clean`` cheap as well.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from testbed import versions
from testbed.procs import TestbedError

REPO = Path(__file__).resolve().parents[2]


def cache_root() -> Path:
    """Where the test bed keeps binaries and state (``FAILBACK_TESTBED_CACHE`` overrides)."""
    return Path(os.environ.get("FAILBACK_TESTBED_CACHE", REPO / ".testbed"))


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    etcd: Path
    kubectl: Path
    vcsim: Path
    helm: Path

    def missing(self) -> list[Path]:
        return [
            p
            for p in (self.kube_apiserver, self.etcd, self.kubectl, self.vcsim, self.helm)
            if not p.is_file()
        ]


def _kube_dir() -> Path:
    return cache_root() / "bin" / f"kubernetes-v{versions.KUBERNETES}"


def binaries() -> Binaries:
    kube = _kube_dir()
    return Binaries(
        kube_apiserver=kube / "kube-apiserver",
        etcd=kube / "etcd",
        kubectl=kube / "kubectl",
        vcsim=cache_root() / "bin" / f"vcsim-v{versions.GOVMOMI}" / "vcsim",
        helm=cache_root() / "bin" / f"helm-v{versions.HELM}" / "helm",
    )


def require() -> Binaries:
    """The binaries, or an error that says how to build them."""
    bins = binaries()
    missing = bins.missing()
    if missing:
        names = ", ".join(str(p) for p in missing)
        raise TestbedError(
            f"test bed binaries are missing ({names}); build them with `make testbed` "
            "(or `PYTHONPATH=hack .venv/bin/python -m testbed build`): it needs the Go "
            "toolchain and the Go module proxy, and takes about 10 minutes the first time"
        )
    return bins


def go_toolchain() -> str:
    go = shutil.which("go")
    if go is None:
        raise TestbedError(
            "the Go toolchain is not on PATH; install Go >= 1.25 (https://go.dev/dl or the "
            "distribution's golang package) and run `make testbed` again"
        )
    return go


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    print(f"testbed build: {' '.join(argv)}", file=sys.stderr, flush=True)
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise TestbedError(
            f"`{' '.join(argv)}` failed with status {proc.returncode} in {cwd}:\n"
            f"{proc.stderr[-4000:]}"
        )
    return proc.stdout


_STAGING = re.compile(r"^\s*(?:replace\s+)?(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", re.MULTILINE)


def staging_modules(kubernetes_gomod: str) -> list[str]:
    """The k8s.io/* modules that Kubernetes' own go.mod replaces with its staging tree."""
    return sorted(set(_STAGING.findall(kubernetes_gomod)))


def wrapper_gomod(kubernetes_version: str, staging: list[str]) -> str:
    """go.mod of the wrapper: Kubernetes at a release, each staging module at v0.<minor>.<patch>."""
    staging_version = "v0." + kubernetes_version.split(".", 1)[1]
    lines = [
        "module failback.local/testbed/kubernetes",
        "",
        "go 1.25.0",
        "",
        f"require k8s.io/kubernetes v{kubernetes_version}",
        "",
    ]
    lines += [f"replace {m} => {m} {staging_version}" for m in staging]
    return "\n".join(lines) + "\n"


def version_ldflags(kubernetes_version: str) -> str:
    """What Kubernetes' own build stamps into its binaries, so they report their release."""
    major, minor, _ = kubernetes_version.split(".")
    values = {
        "gitVersion": f"v{kubernetes_version}",
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    return " ".join(
        f"-X {package}.{key}={value}"
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for key, value in values.items()
    )


_TOOLS_GO = """//go:build tools

// Package tools pins the commands the test bed builds into this module's graph.
package tools

import (
\t_ "go.etcd.io/etcd/server/v3"
\t_ "k8s.io/kubernetes/cmd/kube-apiserver"
\t_ "k8s.io/kubernetes/cmd/kubectl"
)
"""


def build_kubernetes() -> None:
    out = _kube_dir()
    bins = binaries()
    if all(p.is_file() for p in (bins.kube_apiserver, bins.etcd, bins.kubectl)):
        return
    go = go_toolchain()
    work = cache_root() / "build" / f"kubernetes-v{versions.KUBERNETES}"
    work.mkdir(parents=True, exist_ok=True)
    # A scratch module only to ask the proxy for Kubernetes' own go.mod.
    (work / "go.mod").write_text("module failback.local/testbed/probe\n\ngo 1.25.0\n")
    info = json.loads(
        _run([go, "mod", "download", "-json", f"k8s.io/kubernetes@v{versions.KUBERNETES}"], work)
    )
    staging = staging_modules(Path(info["GoMod"]).read_text())
    if not staging:
        raise TestbedError(f"found no staging modules in {info['GoMod']}; has the layout changed?")
    (work / "go.mod").write_text(wrapper_gomod(versions.KUBERNETES, staging))
    (work / "tools.go").write_text(_TOOLS_GO)
    _run([go, "mod", "tidy"], work)
    stage = work / "out"
    stage.mkdir(exist_ok=True)
    _run(
        [
            go,
            "build",
            "-trimpath",
            "-ldflags",
            version_ldflags(versions.KUBERNETES),
            "-o",
            str(stage) + "/",
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "k8s.io/kubernetes/cmd/kubectl",
            "go.etcd.io/etcd/server/v3",
        ],
        work,
    )
    etcd_version = _run([go, "list", "-m", "-f", "{{.Version}}", "go.etcd.io/etcd/server/v3"], work)
    out.mkdir(parents=True, exist_ok=True)
    # `go build` names a /v3 package after the element before it.
    for src, dst in (
        ("kube-apiserver", "kube-apiserver"),
        ("kubectl", "kubectl"),
        ("server", "etcd"),
    ):
        (stage / src).replace(out / dst)
    (out / "versions.json").write_text(
        json.dumps({"kubernetes": versions.KUBERNETES, "etcd": etcd_version.strip()}) + "\n"
    )


def _go_install(package: str, version: str, target: Path) -> None:
    if target.is_file():
        return
    go = go_toolchain()
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = target.parent / "stage"
    stage.mkdir(exist_ok=True)
    _run(
        [go, "install", "-trimpath", f"{package}@v{version}"],
        target.parent,
        env={"GOBIN": str(stage), "GOFLAGS": "-buildvcs=false"},
    )
    (stage / target.name).replace(target)
    stage.rmdir()


def build_all() -> Binaries:
    build_kubernetes()
    bins = binaries()
    _go_install("github.com/vmware/govmomi/vcsim", versions.GOVMOMI, bins.vcsim)
    _go_install("helm.sh/helm/v3/cmd/helm", versions.HELM, bins.helm)
    return require()
