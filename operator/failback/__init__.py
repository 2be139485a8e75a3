"""failback-operator: bring virtual machines home from Azure to on-premises VMware.

The package is layered; each layer imports only the ones below it (enforced by
import-linter, see ``.importlinter``)::

    cli                      entry points: operator, process-server, master-target, demo
    controllers              kopf handlers, one module per kind, plus the error bridge
    services | adapters | dataplane
                             services observe through ports and act; adapters implement
                             the ports for vSphere and Azure; the data plane moves bytes
    ports                    typing.Protocol seams between services and adapters
    domain                   pure decisions: state machines, preflight rules, RPO math
    api                      typed models of the failback.io/v1alpha1 custom resources
    errors                   the exception hierarchy shared by every layer
"""

__version__ = "0.1.0"
