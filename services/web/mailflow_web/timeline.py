"""One message's trace (the queue's GET /trace/{queue_id}: what `mailflow trace` prints) laid out as a
timeline: each hop's start and length as a share of the whole journey, for the message page's bars.

An event's `at` is when its step ended (mailflow.cli.queue.step_start). Events that do not parse are
left out; none raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mailflow.cli.queue import step_start


@dataclass(frozen=True)
class Hop:
    step: str
    service: str
    started: str  # HH:MM:SS.mmm
    offset_ms: float  # since the first hop began
    duration_ms: float
    x: float  # bar start, % of the journey
    width: float  # bar length, % of the journey (at least a sliver, so a 0 ms step shows)
    detail: str
    retry: bool  # a step seen before (a delivery again after a deferral...)


def hops(events: list[dict]) -> tuple[list[Hop], float]:
    """The hops in order of their start, and the journey's length in ms."""
    parsed = []
    for e in events:
        try:
            end = datetime.fromisoformat(e["at"])
            duration = max(0.0, float(e.get("duration_ms", 0.0)))
        except (KeyError, TypeError, ValueError):
            continue
        parsed.append((end - timedelta(milliseconds=duration), duration, e))
    if not parsed:
        return [], 0.0
    parsed.sort(key=lambda p: p[0])
    first = parsed[0][0]
    span = max((start - first).total_seconds() * 1000 + d for start, d, _ in parsed) or 1.0
    seen: set[tuple[str, str]] = set()
    out = []
    for start, duration, e in parsed:
        offset = (start - first).total_seconds() * 1000
        key = (e.get("step", ""), e.get("service", ""))
        out.append(
            Hop(
                step=key[0], service=key[1], started=step_start(e), offset_ms=offset, duration_ms=duration,
                x=100 * offset / span, width=max(0.6, 100 * duration / span), detail=str(e.get("detail", ""))[:2000],
                retry=key in seen,
            )
        )  # fmt: skip
        seen.add(key)
    return out, span
