"""Message bodies on disk: a small blob-store interface and its default, append-only segment files.

`put_many` returns one opaque locator per body and is durable when it returns (one write, one fsync
for the whole batch); the database keeps the locator beside the body's SHA-256, which is what makes
the store content-addressed (one copy however many messages share a body). `get` reads by locator.
Bodies are never changed in place: removing one is the database's business (its row goes), and the
space is taken back by `compact` rewriting a mostly-dead segment elsewhere (see maintenance.py).

Segment files are `seg-<n>.pack` in blob_dir; a locator is "<n>:<offset>:<length>". A crash in the
middle of a write leaves bytes no locator points at (the database commits only after the fsync). Writes
are positioned (pwrite at the end of what has been stored), never appends: a write that fails half-way
(ENOSPC, EFBIG) leaves a tail that the next write overwrites, so every locator still points at its body.
Failures: OSError from the disk reaches the caller (the writer turns it into ServiceUnavailable);
a locator that points past the end of its segment raises BlobMissing.

`get` does not hash what it reads: `intact` (the body against the SHA-256 the database keeps beside its
locator) is run where bodies are copied on, by compaction, which leaves a body that fails it where it is
(so its segment stays) rather than carry changed octets to a new place under the old digest. Why not on
every read (measured 7 Dec 2026, SQLite, this 2-core machine at load average 9, medians of 60 calls
through StoreClient): SHA-256 runs at ~1.8 GB/s here (SHA-NI), 3 µs for 4 KiB against a 1.1-1.6 ms round
trip (0.2-0.4 %), but 0.6 ms for 1 MiB against 5.4 ms for the body (15 %) and 1.4 ms for its header
(42 %: a section is cut from the whole body read), and 2.9 ms for 50 bodies of 100 KiB against 10.4 ms
for the bodies (29 %) and 4.2 ms for their headers (71 %), the header listing every mail client does.
A pread of the same bodies from the page cache costs 2 µs and 36 µs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from mailflow_mailbox_store import metrics

log = logging.getLogger(__name__)


class BlobMissing(Exception):
    pass


def intact(locator: str, data: bytes, sha256: bytes) -> bool:
    """Whether `data`, read at `locator`, is the body whose SHA-256 the database keeps. When it is not:
    an ERROR line with the locator and both digests (never the content) and metrics.BLOB_CORRUPT."""
    got = hashlib.sha256(data).digest()
    if got == sha256:
        return True
    metrics.BLOB_CORRUPT.inc()
    log.error(
        "body does not match its SHA-256: changed on disk",
        extra={"locator": locator, "expected": sha256.hex(), "found": got.hex(), "size": len(data)},
    )
    return False


class BlobStore(Protocol):
    def put_many(self, bodies: Sequence[bytes]) -> list[str]:
        """Store the bodies; durable on return. One locator per body, in order."""
        ...

    def get(self, locator: str) -> bytes: ...

    def close(self) -> None: ...


def parse_locator(locator: str) -> tuple[int, int, int]:
    seg, off, length = locator.split(":")
    return int(seg), int(off), int(length)


class SegmentBlobs:
    """Append-only segment files. Thread-safe: one lock around appends, reads use pread."""

    def __init__(self, directory: str | os.PathLike, segment_bytes: int = 64 * 1024 * 1024):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._readers: dict[int, int] = {}
        self._readers_lock = threading.Lock()
        self._retired: list[int] = []
        existing = self.segments()
        self._seg = max(existing) if existing else 0
        self._fd = -1
        self._size = 0
        if self._seg and existing[self._seg] < segment_bytes:
            self._open(self._seg)
        else:
            self._open(self._seg + 1)

    def path(self, seg: int) -> Path:
        return self.dir / f"seg-{seg:08d}.pack"

    def segments(self) -> dict[int, int]:
        """Segment number -> size in bytes."""
        out = {}
        for p in self.dir.glob("seg-*.pack"):
            try:
                out[int(p.stem[4:])] = p.stat().st_size
            except (ValueError, OSError):
                continue
        return out

    @property
    def active(self) -> int:
        return self._seg

    def _open(self, seg: int) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        path = self.path(seg)
        created = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        self._seg = seg
        self._size = os.fstat(self._fd).st_size
        if created:
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def put_many(self, bodies: Sequence[bytes]) -> list[str]:
        with self._lock:
            if self._size >= self.segment_bytes:
                self._open(self._seg + 1)
            locators = []
            offset = self._size
            for body in bodies:
                locators.append(f"{self._seg}:{offset}:{len(body)}")
                offset += len(body)
            view = memoryview(b"".join(bodies))
            at = self._size
            while view:
                n = os.pwrite(self._fd, view, at)
                view = view[n:]
                at += n
            os.fdatasync(self._fd)
            self._size = offset
            return locators

    def _reader(self, seg: int) -> int:
        fd = self._readers.get(seg)
        if fd is None:
            with self._readers_lock:
                fd = self._readers.get(seg)
                if fd is None:
                    try:
                        fd = os.open(self.path(seg), os.O_RDONLY)
                    except FileNotFoundError as exc:
                        raise BlobMissing(f"segment {seg} is gone") from exc
                    self._readers[seg] = fd
        return fd

    def get(self, locator: str) -> bytes:
        seg, off, length = parse_locator(locator)
        fd = self._reader(seg)
        data = os.pread(fd, length, off)
        if len(data) < length:  # pread may return less for big reads
            parts = [data]
            got = len(data)
            while got < length:
                more = os.pread(fd, length - got, off + got)
                if not more:
                    raise BlobMissing(f"{locator}: segment ends early")
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        return data

    def remove_segment(self, seg: int) -> None:
        """Delete a segment nothing points at any more (compaction). Open readers keep working."""
        if seg == self._seg:
            raise ValueError("cannot remove the active segment")
        with self._readers_lock:
            fd = self._readers.pop(seg, None)
            if fd is not None:  # a reader may hold it right now: close it only at close()
                self._retired.append(fd)
        self.path(seg).unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        with self._readers_lock:
            for fd in [*self._readers.values(), *self._retired]:
                os.close(fd)
            self._readers.clear()
            self._retired.clear()
