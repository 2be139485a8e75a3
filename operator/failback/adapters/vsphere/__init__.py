"""vSphere adapter: sessions, PropertyCollector inventory, tasks, faults.

:class:`Sessions` is the entry point (one cached, liveness-checked session per vCenter
and user); :mod:`.operations` the idempotent operations; :mod:`.faults` the one place
where pyVmomi's faults become the port's errors; :mod:`.tls` how vCenter is trusted.
"""

from failback.adapters.vsphere.session import Client, Sessions

__all__ = ["Client", "Sessions"]
