"""Who the test bed's Azure is: the one tenant, principal and subscription it knows.

The identifiers are made up for the test bed (they name nothing in real Azure). The
client secret is generated per run by ``testbed.azure.process`` and handed to the
emulator in a 0600 file; ``DEFAULT_CLIENT_SECRET`` only serves a hand-started emulator.
"""

from __future__ import annotations

TENANT_ID = "7e5b0a1e-5eed-4bed-9a2e-0000000fa11b"
CLIENT_ID = "7e5b0a1e-5eed-4bed-9a2e-00000c11e47d"
SUBSCRIPTION_ID = "7e5b0a1e-5eed-4bed-9a2e-0000005cb5c1"
DEFAULT_CLIENT_SECRET = "failback-testbed-not-a-real-secret"

ARM_AUDIENCES = frozenset({"https://management.azure.com", "https://management.core.windows.net"})
ARM_SCOPE = "https://management.azure.com/.default"

DEFAULT_LOCATION = "westeurope"
DEFAULT_RESOURCE_GROUP = "failback-testbed"
