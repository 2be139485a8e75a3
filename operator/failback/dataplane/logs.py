"""The data plane services' logs: one JSON object per line on stderr; never a key, a body,
a SAS URL or a secret."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(name: str, verbose: bool = False) -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # The Azure SDK logs every request at INFO (URLs and header names).
    logging.getLogger("azure").setLevel(logging.DEBUG if verbose else logging.WARNING)
    return logging.getLogger(name)


def event(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """Log ``message`` with ``fields`` as top-level JSON keys."""
    logger.log(level, message, extra={"fields": fields})
