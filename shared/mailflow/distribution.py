"""Which installed Python distribution is Mailflow, and its version: read from the package metadata.

The name and the version are written once, in pyproject.toml. The distribution is found as the one
that installs the `mailflow` command, so a renamed distribution needs no change here. Run from a
source tree that was never installed, `version()` says "unknown" rather than failing.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata

COMMAND = "mailflow"


@cache
def distribution() -> metadata.Distribution | None:
    found = sorted(
        (ep.dist for ep in metadata.entry_points(group="console_scripts", name=COMMAND) if ep.dist),
        key=lambda d: d.name,
    )
    return found[0] if found else None


def name() -> str:
    dist = distribution()
    if dist is None:
        raise LookupError(f"no installed distribution provides the {COMMAND!r} command")
    return dist.name


def version() -> str:
    dist = distribution()
    return dist.version if dist else "unknown"
