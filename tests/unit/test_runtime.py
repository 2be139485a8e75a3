"""Every kopf setting that matters is chosen on purpose (controllers/runtime.py)."""

from __future__ import annotations

import logging

import kopf
import pytest

from failback.controllers import runtime
from failback.settings import Settings


def test_kopf_settings_are_explicit() -> None:
    ks = runtime.kopf_settings(Settings(namespaces=("ns",), priority=5, instance="pod-1"))
    assert ks.persistence.finalizer == "failback.io/finalizer"
    # Progress in annotations only: status.kopf would be pruned by our structural schema.
    assert isinstance(ks.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert isinstance(ks.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert (ks.peering.name, ks.peering.mandatory, ks.peering.standalone) == (
        "failback-operator",
        True,
        False,
    )
    assert ks.peering.clusterwide is False
    assert ks.peering.priority == 5
    assert ks.scanning.disabled is True, "no cluster-wide namespace/CRD watches (RBAC)"
    assert ks.watching.server_timeout == 300
    assert ks.watching.client_timeout == 330
    assert ks.posting.level == logging.WARNING
    assert ks.posting.reporting_component == "failback-operator"
    assert ks.posting.reporting_instance == "pod-1"


def test_standalone_turns_peering_off_and_optional() -> None:
    ks = runtime.kopf_settings(Settings(namespaces=("ns",), standalone=True))
    assert ks.peering.standalone is True
    assert ks.peering.mandatory is False


def test_settings_refuse_no_namespace() -> None:
    with pytest.raises(ValueError, match="--namespace"):
        Settings(namespaces=())
