"""Date parts of RFC 5260 §4.2 from a header's date or the time of delivery. Pure; nothing raises: a
date that cannot be read is None (the `date` test is then false, §4)."""

from __future__ import annotations

import email.utils
from datetime import UTC, date, datetime, timedelta, timezone

MJD_EPOCH = date(1858, 11, 17)  # day 0 of the Modified Julian Day count (§4.2 "julian")


def zone(text: str) -> timezone:
    """"+hhmm"/"-hhmm" (checked by script.py) as a tzinfo."""
    sign = -1 if text[0] == "-" else 1
    return timezone(sign * timedelta(hours=int(text[1:3]), minutes=int(text[3:5])))


def header_date(value: str) -> datetime | None:
    """A Date:-style header value (for Received:, the part after its last ";") as an aware datetime."""
    if ";" in value:
        value = value.rsplit(";", 1)[1]
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)  # "-0000": UTC, RFC 5322 §3.3


def part(when: datetime, name: str) -> str | None:
    off = when.utcoffset() or timedelta(0)
    minutes = int(off.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    zone_text = f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    match name:
        case "year":
            return f"{when.year:04d}"
        case "month":
            return f"{when.month:02d}"
        case "day":
            return f"{when.day:02d}"
        case "date":
            return f"{when.year:04d}-{when.month:02d}-{when.day:02d}"
        case "julian":
            return str((when.date() - MJD_EPOCH).days)
        case "hour":
            return f"{when.hour:02d}"
        case "minute":
            return f"{when.minute:02d}"
        case "second":
            return f"{when.second:02d}"
        case "time":
            return f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}"
        case "iso8601":
            return when.replace(microsecond=0).isoformat()
        case "std11":
            return email.utils.format_datetime(when.replace(microsecond=0))
        case "zone":
            return zone_text
        case "weekday":
            return str((when.weekday() + 1) % 7)  # 0 is Sunday
    return None
