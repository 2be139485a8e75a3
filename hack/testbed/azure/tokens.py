"""Access tokens: opaque random strings remembered with principal, audience and expiry."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from testbed.azure.principal import TENANT_ID


@dataclass
class AccessToken:
    client_id: str
    tenant_id: str
    audience: str
    expires: float


class Tokens:
    def __init__(self) -> None:
        self._tokens: dict[str, AccessToken] = {}

    def issue(self, client_id: str, audience: str, expires: float, now: float) -> str:
        if len(self._tokens) > 10_000:  # a compressed clock makes clients ask often
            self._tokens = {k: v for k, v in self._tokens.items() if v.expires > now - 86400}
        token = secrets.token_urlsafe(48)
        self._tokens[token] = AccessToken(client_id, TENANT_ID, audience, expires)
        return token

    def lookup(self, token: str) -> AccessToken | None:
        return self._tokens.get(token)

    def expire_all(self, now: float) -> int:
        for token in self._tokens.values():
            token.expires = min(token.expires, now)
        return len(self._tokens)

    def clear(self) -> None:
        self._tokens.clear()
