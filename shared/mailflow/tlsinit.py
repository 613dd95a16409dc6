"""One-shot TLS set-up for containers: `python -m mailflow.tlsinit`.

Writes a self-signed certificate and key to MAILFLOW_TLS_CERT / MAILFLOW_TLS_KEY for MAILFLOW_HOSTNAME
unless both files exist already, so a real certificate put in the TLS volume is never overwritten.
docker-compose runs it before the services start; the Kubernetes dev overlay runs it as an init
container. Exits non-zero (with the reason on stderr) if a path is unset or cannot be written.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mailflow import tls


def main() -> int:
    cert = os.environ.get("MAILFLOW_TLS_CERT", "")
    key = os.environ.get("MAILFLOW_TLS_KEY", "")
    hostname = os.environ.get("MAILFLOW_HOSTNAME", "localhost")
    if not cert or not key:
        print("tlsinit: MAILFLOW_TLS_CERT and MAILFLOW_TLS_KEY must be set", file=sys.stderr)
        return 1
    try:
        made = tls.ensure_self_signed(Path(cert), Path(key), hostname)
    except OSError as e:
        print(f"tlsinit: cannot write the TLS pair: {e}", file=sys.stderr)
        return 1
    print(
        f"tlsinit: {'wrote a self-signed pair for ' + hostname if made else 'kept the existing pair'}: {cert}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
