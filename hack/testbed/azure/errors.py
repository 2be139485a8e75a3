"""Errors in the shape each emulated service answers them.

A handler raises one of these; the server's middleware renders it:

- ``ArmError``: Azure Resource Manager's JSON ``{"error": {"code", "message"}}``;
- ``StorageError``: Blob Storage's XML ``<Error><Code/><Message/></Error>`` with the
  ``x-ms-error-code`` header the storage SDK maps exceptions from;
- ``AadError``: the identity platform's OAuth error (``error``, ``error_description``
  starting with an ``AADSTS`` code, ``error_codes``).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web


class EmulatedError(Exception):
    """An error answer of the emulated Azure."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def response(self, request_id: str) -> web.Response:
        raise NotImplementedError


class ArmError(EmulatedError):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(status, message, headers)
        self.code = code
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}

    def response(self, request_id: str) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.headers)


def not_found(resource_type: str, name: str, resource_group: str) -> ArmError:
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource '{resource_type}/{name}' under resource group '{resource_group}' "
        "was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


def not_allowed(message: str) -> ArmError:
    return ArmError(409, "OperationNotAllowed", message)


def bad_request(message: str, code: str = "InvalidParameter") -> ArmError:
    return ArmError(400, code, message)


class StorageError(EmulatedError):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers)
        self.code = code
        self.detail = detail

    def response(self, request_id: str) -> web.Response:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
        text = f"{self.message}\nRequestId:{request_id}\nTime:{now}"
        detail = (
            f"<AuthenticationErrorDetail>{escape(self.detail)}</AuthenticationErrorDetail>"
            if self.detail
            else ""
        )
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f"<Error><Code>{escape(self.code)}</Code><Message>{escape(text)}</Message>"
            f"{detail}</Error>"
        )
        headers = {**self.headers, "x-ms-error-code": self.code}
        return web.Response(
            status=self.status,
            body=body.encode(),
            content_type="application/xml",
            headers=headers,
        )


class AadError(EmulatedError):
    def __init__(self, status: int, error: str, aadsts: int, description: str) -> None:
        super().__init__(status, f"AADSTS{aadsts}: {description}")
        self.error = error
        self.aadsts = aadsts

    def response(self, request_id: str) -> web.Response:
        now = dt.datetime.now(dt.UTC)
        correlation = str(uuid.uuid4())
        body = {
            "error": self.error,
            "error_description": (
                f"{self.message}\r\nTrace ID: {request_id}\r\nCorrelation ID: {correlation}"
                f"\r\nTimestamp: {now:%Y-%m-%d %H:%M:%S}Z"
            ),
            "error_codes": [self.aadsts],
            "timestamp": f"{now:%Y-%m-%d %H:%M:%S}Z",
            "trace_id": request_id,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.aadsts}",
        }
        return web.Response(
            status=self.status,
            body=json.dumps(body).encode(),
            content_type="application/json",
            headers=self.headers,
        )
