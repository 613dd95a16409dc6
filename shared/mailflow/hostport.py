"""Listen addresses as settings hold them ("127.0.0.1:2025", "[::1]:25", ":2025") and the URL a client
on this host uses for one. No third-party import: the container health probe runs it every few seconds.
A malformed address raises ValueError naming it.
"""

from __future__ import annotations

from mailflow.services import LOCAL_HOST


def split_hostport(value: str, default_host: str = LOCAL_HOST) -> tuple[str, int]:
    """'127.0.0.1:2025' -> ('127.0.0.1', 2025); ':2025' and '2025' bind the default host; '[::1]:25' works."""
    value = value.strip()
    if value.isdigit():
        return default_host, int(value)
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {value!r}")
    host = host.strip("[]") or default_host
    return host, int(port)


WILDCARDS = {"0.0.0.0", "::", ""}


def http_url(listen: str) -> str:
    """The URL a client on this host uses for an HTTP listen address: a wildcard bind address is asked
    on 127.0.0.1, an IPv6 address is bracketed. ValueError for a malformed address."""
    host, port = split_hostport(listen)
    if host in WILDCARDS:
        host = LOCAL_HOST
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
