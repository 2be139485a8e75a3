"""``python -m testbed.azure --host 127.0.0.1 --port PORT --cert F --key F [--time-scale X]``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from testbed.azure.principal import DEFAULT_CLIENT_SECRET
from testbed.azure.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.azure", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", type=Path, required=True, help="PEM server certificate")
    parser.add_argument("--key", type=Path, required=True, help="PEM private key")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="emulated seconds per real second (60: one real second is one emulated minute)",
    )
    parser.add_argument(
        "--client-secret-file",
        type=Path,
        default=None,
        help="file holding the test bed principal's client secret (default: a fixed one)",
    )
    args = parser.parse_args(argv)
    if args.time_scale <= 0:
        parser.error("--time-scale must be positive")
    secret = (
        args.client_secret_file.read_text().strip()
        if args.client_secret_file
        else DEFAULT_CLIENT_SECRET
    )
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    serve(
        host=args.host,
        port=args.port,
        cert=args.cert,
        key=args.key,
        client_secret=secret,
        time_scale=args.time_scale,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
