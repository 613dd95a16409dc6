"""A POP3 maildrop (RFC 1939 §8): the INBOX as it was at login, numbered 1..n, with deletion marks.

Bodies come from the store in batches: a maildrop within `prefetch_bytes` is read whole at the first
LIST/RETR/TOP, a bigger one from message n on up to `prefetch_bytes`, so a client that RETRs one
message after another costs one store round trip per batch, not per message. Deletions happen only in `update()` (the UPDATE state, after QUIT): the
marked messages get \\Deleted and are expunged, and nothing else in the mailbox is touched.
A message that vanished from the store meanwhile (another client expunged it) reads as b"".
"""

from __future__ import annotations

import re

from mailflow.store.api import DELETED, Mailboxes, Principal

_BARE_LF = re.compile(rb"(?<!\r)\n")
MAX_BATCH = 500


def crlf(raw: bytes) -> bytes:
    """The message with CRLF line ends when it was stored with bare LFs (judged by its first line end:
    one scan less for the usual CRLF message, which goes out exactly as stored and as LIST counted it)."""
    first = raw.find(b"\n")
    if first >= 0 and (first == 0 or raw[first - 1] != 13):
        raw = _BARE_LF.sub(b"\r\n", raw)
    return raw


def stuffed(raw: bytes) -> bytes:
    """RFC 1939 §3: lines starting with "." get another one; CRLF line ends, the last one included.
    The multi-line response still needs its terminating "." CRLF after this. One pass over the bytes."""
    raw = crlf(raw).replace(b"\n.", b"\n..")
    if raw.startswith(b"."):
        raw = b"." + raw
    if raw and not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    return raw


def dot_stuffed(raw: bytes) -> bytes:
    """The whole multi-line body: stuffed lines and the terminating "." CRLF."""
    return stuffed(raw) + b".\r\n"


def top(raw: bytes, lines: int) -> bytes:
    """The header, the blank line and the first `lines` lines of the body (RFC 1939 §7 TOP)."""
    raw = crlf(raw)
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return raw
    body_start = end + 4
    if lines <= 0:
        return raw[:body_start]
    pos = body_start
    for _ in range(lines):
        nl = raw.find(b"\r\n", pos)
        if nl < 0:
            return raw
        pos = nl + 2
    return raw[:pos]


class Maildrop:
    """Sizes are learnt lazily: STAT alone needs none (the mailbox status has the total), and when the
    whole maildrop fits in `prefetch_bytes` its bodies are fetched at once (their lengths are the sizes,
    and the RETRs that usually follow a LIST cost no further round trip); a bigger one asks for the
    messages' metadata instead and reads bodies ahead in batches."""

    def __init__(
        self,
        store: Mailboxes,
        principal: Principal,
        mailbox_id: int,
        uidvalidity: int,
        uids: list[int],
        total: int,
        prefetch_bytes: int = 2 * 1024 * 1024,
    ):
        self.store, self.principal, self.mailbox_id = store, principal, mailbox_id
        self.uidvalidity = uidvalidity
        self.uids = uids
        self.total = total  # octets of all messages, from the mailbox status
        self.sizes: list[int] | None = None
        self.deleted: set[int] = set()  # message numbers (1-based)
        self.prefetch_bytes = prefetch_bytes
        self._cache: dict[int, bytes] = {}

    def __len__(self) -> int:
        return len(self.uids)

    def exists(self, n: int) -> bool:
        return 1 <= n <= len(self.uids)

    async def load_sizes(self) -> list[int]:
        if self.sizes is None:
            uids = self.uids
            if self.total <= self.prefetch_bytes and len(uids) <= MAX_BATCH:
                got = await self.store.fetch_bodies(self.principal, self.mailbox_id, uids) if uids else {}
                self._cache = {n: got[u] for n, u in enumerate(uids, 1) if u in got}
                self.sizes = [len(got.get(u, b"")) for u in uids]
            else:
                metas = await self.store.fetch_meta(self.principal, self.mailbox_id, uids)
                size = {m.uid: m.size for m in metas}
                self.sizes = [size.get(u, 0) for u in uids]
        return self.sizes

    async def stat(self) -> tuple[int, int]:
        if self.deleted:
            await self.load_sizes()
        return self.stat_now()

    def stat_now(self) -> tuple[int, int]:
        """(messages, octets) not marked deleted; needs the sizes once something is marked."""
        if not self.deleted:
            return len(self.uids), self.total if self.sizes is None else sum(self.sizes)
        sizes = self.sizes
        live = [i for i in range(len(self.uids)) if i + 1 not in self.deleted]
        return len(live), sum(sizes[i] for i in live)

    def cached(self, n: int) -> bytes | None:
        """Message n if it was read ahead (and forget it: a message is retrieved once, usually)."""
        return self._cache.pop(n, None)

    def peek(self, n: int) -> bytes | None:
        return self._cache.get(n)

    def unique_id(self, n: int) -> str:
        """Stable across sessions while the mailbox keeps its UIDVALIDITY (RFC 1939 §7 UIDL)."""
        return f"{self.uidvalidity}.{self.uids[n - 1]}"

    async def body(self, n: int, keep: bool = False) -> bytes:
        """Message n, reading ahead when it has to ask the store. `keep` leaves it read ahead (TOP)."""
        raw = self._cache.get(n) if keep else self._cache.pop(n, None)
        if raw is not None:
            return raw
        sizes = await self.load_sizes()
        raw = self._cache.get(n) if keep else self._cache.pop(n, None)
        if raw is not None:
            return raw
        wanted, budget = [n], sizes[n - 1]
        m = n + 1
        while (
            m <= len(self.uids) and len(wanted) < MAX_BATCH and budget + sizes[m - 1] <= self.prefetch_bytes
        ):
            if m not in self.deleted and m not in self._cache:
                wanted.append(m)
                budget += sizes[m - 1]
            m += 1
        got = await self.store.fetch_bodies(
            self.principal, self.mailbox_id, [self.uids[k - 1] for k in wanted]
        )
        self._cache.clear()  # what was read ahead and not asked for is not kept twice
        for k in wanted[0 if keep else 1 :]:
            if self.uids[k - 1] in got:
                self._cache[k] = got[self.uids[k - 1]]
        return got.get(self.uids[n - 1], b"")

    async def update(self) -> None:
        """Delete the marked messages for good (RFC 1939 §6). Raises if the store could not."""
        if not self.deleted:
            return
        uids = [self.uids[n - 1] for n in sorted(self.deleted)]
        await self.store.store_flags(self.principal, self.mailbox_id, uids, "add", frozenset({DELETED}))
        await self.store.expunge(self.principal, self.mailbox_id, uids)
