"""Everything one emulator process knows, in one object the handlers share."""

from __future__ import annotations

import secrets

from aiohttp import web

from testbed.azure.assertions import TrustedCredential
from testbed.azure.clock import Clock
from testbed.azure.faults import Faults
from testbed.azure.limits import Limits, Throttle
from testbed.azure.sas import SasSigner
from testbed.azure.stats import Stats
from testbed.azure.store import Store
from testbed.azure.tokens import Tokens


class Emulator:
    def __init__(self, *, endpoint: str, client_secret: str, time_scale: float) -> None:
        self.endpoint = endpoint
        self.client_secret = client_secret
        self.initial_time_scale = time_scale
        self.clock = Clock(time_scale)
        self.limits = Limits()
        self.stats = Stats()
        self.store = Store(self.clock, self.stats)
        self.tokens = Tokens()
        self.faults = Faults()
        self.throttle = Throttle()
        self.sas = SasSigner(secrets.token_bytes(32))
        self.credentials: list[TrustedCredential] = []
        """Certificates and federated credentials the principal trusts (besides its secret)."""

    def reset(self) -> None:
        """Back to a fresh start: no resources, tokens, faults, counters; default limits.

        The clock keeps running (emulated time never goes back) at the initial scale.
        """
        self.clock.set_scale(self.initial_time_scale)
        self.limits = Limits()
        self.stats = Stats()
        self.store = Store(self.clock, self.stats)
        self.tokens.clear()
        self.faults.clear()
        self.throttle.reset()
        self.credentials.clear()

    def settle(self) -> None:
        self.store.settle()


EMULATOR = web.AppKey("emulator", Emulator)
