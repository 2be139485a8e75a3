"""SAS URLs of exported disks and snapshots, signed with a key only the emulator knows.

``https://127.0.0.1:PORT/<account>/<container>/abcd?sv=..&sr=b&si=..&sp=r|rw&se=..&sig=..``:
path style (so azure-storage-blob treats the IP host as an emulator-style account
URL), one container per grant. ``sig`` is an HMAC-SHA256 over the path, ``sp``,
``se``, ``si``, ``sv`` and ``sr``; a URL that was altered, has expired (``se``, emulated
time) or whose grant was revoked is refused.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlencode

from testbed.azure.errors import StorageError
from testbed.azure.resources import AccessGrant

SAS_VERSION = "2018-03-28"
BLOB_NAME = "abcd"


def _se(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_se(value: str) -> float:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


class SasSigner:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _sign(self, account: str, container: str, blob: str, fields: Mapping[str, str]) -> str:
        names = ("sp", "se", "si", "sv", "sr")
        text = "\n".join([account, container, blob, *(fields[name] for name in names)])
        digest = hmac.new(self._key, text.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    def url(self, endpoint: str, grant: AccessGrant) -> str:
        fields = {
            "sv": SAS_VERSION,
            "sr": "b",
            "si": grant.id,
            "sp": "rw" if grant.write else "r",
            "se": _se(grant.expires),
        }
        fields["sig"] = self._sign(grant.account, grant.container, BLOB_NAME, fields)
        return f"{endpoint}/{grant.account}/{grant.container}/{BLOB_NAME}?{urlencode(fields)}"

    def verify(
        self, query: Mapping[str, str], account: str, container: str, blob: str, now: float
    ) -> tuple[str, str]:
        """(grant id, permissions) of a well-signed, unexpired SAS; else a 403."""
        missing = [name for name in ("sv", "sr", "si", "sp", "se", "sig") if name not in query]
        if missing:
            raise StorageError(
                403,
                "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of "
                "Authorization header is formed correctly including the signature.",
                detail=f"The SAS lacks {', '.join(missing)}.",
            )
        expected = self._sign(account, container, blob, query)
        if not hmac.compare_digest(expected.encode(), query["sig"].encode()):
            raise StorageError(
                403,
                "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of "
                "Authorization header is formed correctly including the signature.",
                detail="Signature did not match.",
            )
        try:
            expiry = _parse_se(query["se"])
        except ValueError:
            raise StorageError(
                403,
                "AuthenticationFailed",
                "Server failed to authenticate the request.",
                detail="se is not a valid time.",
            ) from None
        if now >= expiry:
            raise StorageError(
                403,
                "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of "
                "Authorization header is formed correctly including the signature.",
                detail=f"Signature not valid in the specified time frame: Expiry "
                f"[{query['se']}] - Current [{_se(now)}]",
            )
        return query["si"], query["sp"]
