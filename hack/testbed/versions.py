"""Pinned versions of every component the test bed builds. Change them here only.

The Kubernetes release fixes the etcd version too: etcd is built from the same
wrapper module, at the version the release's own go.mod requires.
"""

from __future__ import annotations

KUBERNETES = "1.35.4"
GOVMOMI = (
    "0.46.3"  # vcsim: the last release whose module zip still carries vcsim/ (0.47+ split it out)
)
HELM = "3.19.0"
