"""The container health probe: `python -m mailflow.healthcheck [ENV_NAME | URL] [--path /readyz]`.

Images run it as their HEALTHCHECK, so no curl or wget is needed in them. Given the name of a
service's HTTP listen variable (e.g. MAILFLOW_DELIVERY_HTTP_LISTEN), it asks that address's `/readyz`
(a wildcard bind address is asked on 127.0.0.1); given a URL it asks that URL. Exit status 0 when the
answer is 200, 1 on any other status, a refused or timed-out connection, or a malformed address, with
one line on stderr saying why (Docker keeps it in the container's health log).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request

from mailflow.settings import split_hostport

WILDCARDS = {"0.0.0.0", "::", ""}


def url_for(target: str, path: str) -> str:
    if target.startswith(("http://", "https://")):
        return target
    listen = os.environ.get(target, "") if target.isupper() else target
    if not listen:
        raise ValueError(f"{target} is not set")
    host, port = split_hostport(listen)
    if host in WILDCARDS:
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"


def probe(url: str, timeout: float) -> str | None:
    """None when healthy, else the reason."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return None if reply.status == 200 else f"{url}: HTTP {reply.status}"
    except urllib.error.HTTPError as e:
        return f"{url}: HTTP {e.code} {e.read(300).decode(errors='replace')}"
    except (OSError, ValueError) as e:
        return f"{url}: {e}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mailflow.healthcheck", description=__doc__.splitlines()[0]
    )
    parser.add_argument("target", help="an HTTP listen variable's name, a host:port, or a URL")
    parser.add_argument("--path", default="/readyz", help="path to ask (default /readyz)")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    try:
        url = url_for(args.target, args.path)
    except ValueError as e:
        print(f"healthcheck: {e}", file=sys.stderr)
        return 1
    reason = probe(url, args.timeout)
    if reason:
        print(f"healthcheck: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
