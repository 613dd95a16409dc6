"""Which installed Python distribution is Mailflow, and its version: read from the package metadata.

The name and the version are written once, in pyproject.toml. The distribution is found as the one
that installs the `mailflow` command, so a renamed distribution needs no change here; one that an
installer installed (pip writes INSTALLER) is preferred to the build's leftover `*.egg-info` in a
source tree on sys.path. Run from a source tree that was never installed, `version()` says "unknown"
rather than failing.
"""

from __future__ import annotations

from functools import cache
from importlib import metadata

COMMAND = "mailflow"


@cache
def distribution() -> metadata.Distribution | None:
    found = sorted(
        (
            dist
            for dist in metadata.distributions()
            if any(ep.group == "console_scripts" and ep.name == COMMAND for ep in dist.entry_points)
        ),
        key=lambda d: (d.read_text("INSTALLER") is None, d.name),
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
