"""Names of the failback.io/v1alpha1 API, shared by the CRDs, the operator and the chart.

The contract test (``tests/unit/test_api_contract.py``) checks every name here against
the CRD YAML in ``crds/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

GROUP: Final = "failback.io"
"""The API group of every custom resource the product defines."""

VERSION: Final = "v1alpha1"
"""The one served and stored version."""

API_VERSION: Final = f"{GROUP}/{VERSION}"
"""The ``apiVersion`` of the product's objects."""

CATEGORY: Final = "failback"
"""``kubectl get failback`` lists every kind below."""

FINALIZER: Final = "failback.io/finalizer"
"""Held on an object while the operator still has something to undo for it."""

FIELD_MANAGER: Final = "failback-operator"
"""Field manager (and event reporting component) of everything the operator writes."""


@dataclass(frozen=True)
class Resource:
    """How one kind is named in the API."""

    kind: str
    """``kind`` in manifests, e.g. ``ProtectedVM``."""

    plural: str
    """The URL segment and ``kubectl get`` name, e.g. ``protectedvms``."""

    singular: str
    """The singular ``kubectl`` name, e.g. ``protectedvm``."""

    short_name: str
    """The ``kubectl`` short name, e.g. ``pvm``."""

    @property
    def crd_name(self) -> str:
        """The CustomResourceDefinition's name: ``<plural>.<group>``."""
        return f"{self.plural}.{GROUP}"


PROTECTED_VM: Final = Resource("ProtectedVM", "protectedvms", "protectedvm", "pvm")
FAILBACK_PLAN: Final = Resource("FailbackPlan", "failbackplans", "failbackplan", "fbp")
MASTER_TARGET: Final = Resource("MasterTarget", "mastertargets", "mastertarget", "mt")
PROCESS_SERVER: Final = Resource("ProcessServer", "processservers", "processserver", "ps")

RESOURCES: Final = (PROTECTED_VM, FAILBACK_PLAN, MASTER_TARGET, PROCESS_SERVER)
"""Every kind of the API, in the order the documentation presents them."""
