"""The container health probe: `python -m mailflow.healthcheck [SERVICE | ENV_NAME | HOST:PORT | URL]`.

The image runs it as its HEALTHCHECK with no target: it finds the Mailflow service that runs in the
container (a process started as `mailflow serve <service>` or `python -m mailflow_<service>`) and asks
that service's `/readyz` at its MAILFLOW_<X>_HTTP_LISTEN, read as the service reads it (the
environment, then the configuration file, then its default in `mailflow.services`); a wildcard bind
address is asked on 127.0.0.1. Given a service's name it asks that service; given the name of a
listen variable, a host:port or a URL, that. No curl or wget is needed in the image. Exit status 0
when the answer is 200; 1 on any other status, a refused or timed-out connection, a malformed
address, no service running (or several: name one), with one line on stderr saying why (Docker keeps
it in the container's health log).
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from pathlib import Path

from mailflow.configfile import lookup
from mailflow.hostport import http_url
from mailflow.services import BY_MODULE, SERVICES

PROC = Path("/proc")


def service_of(argv: list[str]) -> str | None:
    """`python -m mailflow_queue` or `mailflow serve queue` -> "queue"; anything else -> None."""
    for i, arg in enumerate(argv[:-1]):
        following = argv[i + 1]
        if arg == "-m" and following in BY_MODULE:
            return BY_MODULE[following].name
        if arg == "serve" and following in SERVICES and any(Path(a).name == "mailflow" for a in argv[:i]):
            return following
    return None


def running_services(proc: Path | None = None) -> set[str]:
    """The Mailflow services among this host's (this container's) processes."""
    found = set()
    for entry in (proc or PROC).iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # it ended meanwhile, or is not ours to read
            continue
        service = service_of([a.decode(errors="replace") for a in raw.split(b"\0") if a])
        if service:
            found.add(service)
    return found


def url_for(target: str | None, path: str, proc: Path | None = None) -> str:
    if target and target.startswith(("http://", "https://")):
        return target
    if not target:
        found = running_services(proc)
        if len(found) != 1:
            what = f"several services run here ({', '.join(sorted(found))})" if found else "no Mailflow service runs here"
            raise ValueError(f"{what}: name one")
        target = found.pop()
    if target in SERVICES:
        row = SERVICES[target]
        return http_url(lookup(row.var("http_listen")) or row.http_listen) + path
    if target.isupper():
        listen = lookup(target)
        if not listen:
            raise ValueError(f"{target} is not set")
        return http_url(listen) + path
    return http_url(target) + path


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
    parser.add_argument(
        "target",
        nargs="?",
        help="a service, an HTTP listen variable's name, a host:port or a URL (default: the service running here)",
    )
    parser.add_argument("--path", default="/readyz", help="path to ask (default /readyz)")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    try:
        url = url_for(args.target, args.path)
    except ValueError as e:  # ConfigError too
        print(f"healthcheck: {e}", file=sys.stderr)
        return 1
    reason = probe(url, args.timeout)
    if reason:
        print(f"healthcheck: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
