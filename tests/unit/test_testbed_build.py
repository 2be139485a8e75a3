"""The pure parts of the test bed's build: the wrapper module for Kubernetes."""

from __future__ import annotations

from testbed.build import staging_modules, version_ldflags, wrapper_gomod

KUBERNETES_GOMOD = """module k8s.io/kubernetes

go 1.25.0

require (
\tk8s.io/api v0.0.0
\tk8s.io/apiserver v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apiserver => ./staging/src/k8s.io/apiserver
\tk8s.io/kube-openapi => k8s.io/kube-openapi v0.0.0-2025
)

replace k8s.io/kms => ./staging/src/k8s.io/kms
"""


def test_staging_modules_are_the_local_replaces_only() -> None:
    assert staging_modules(KUBERNETES_GOMOD) == ["k8s.io/api", "k8s.io/apiserver", "k8s.io/kms"]


def test_wrapper_pins_each_staging_module_to_the_matching_v0_release() -> None:
    gomod = wrapper_gomod("1.35.4", ["k8s.io/api", "k8s.io/kms"])
    assert "require k8s.io/kubernetes v1.35.4" in gomod
    assert "replace k8s.io/api => k8s.io/api v0.35.4" in gomod
    assert "replace k8s.io/kms => k8s.io/kms v0.35.4" in gomod


def test_binaries_report_their_release() -> None:
    flags = version_ldflags("1.35.4")
    assert "-X k8s.io/component-base/version.gitVersion=v1.35.4" in flags
    assert "-X k8s.io/client-go/pkg/version.gitMinor=35" in flags
