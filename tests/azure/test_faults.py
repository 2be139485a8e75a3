"""What the fault mapping lets through into a condition message: never a SAS signature
or a bearer token, and Retry-After in either of Azure's forms. (Each mapping of a status
to an error is exercised against the emulator in test_adapter.py.)"""

from __future__ import annotations

import pytest
from azure.core.exceptions import ServiceRequestError

from failback.adapters.azure.faults import redact, retry_after, translate
from failback.ports.azure import AzureUnavailable


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "GET https://127.0.0.1:1/md-abc/c/abcd?sv=2020&sr=b&sp=r&se=2026&sig=S3cr%2Bt failed",
            "GET https://127.0.0.1:1/md-abc/c/abcd?REDACTED failed",
        ),
        ("sig=abc&se=2026-01-01", "sig=REDACTED&se=REDACTED"),
        ("Authorization: Bearer eyJ0eXAiOiJKV1Qi.abc.def", "Authorization: Bearer REDACTED"),
        ("(ResourceNotFound) The VM was not found.", "(ResourceNotFound) The VM was not found."),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


class _Response:
    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "17"}, 17.0),
        ({"x-ms-retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after(_Response(headers)) == seconds
    assert retry_after(None) is None


def test_a_connection_fault_is_unavailable_and_redacted() -> None:
    exc = ServiceRequestError("cannot connect to https://h/x?sv=1&sig=secretsig")
    mapped = translate(exc, "get VM rg/vm")
    assert isinstance(mapped, AzureUnavailable)
    assert "secretsig" not in str(mapped)
    assert str(mapped).startswith("get VM rg/vm: ")
