"""The database: SQLite (WAL, synchronous=FULL) or PostgreSQL, reads on a thread pool, writes grouped.

The engine (SQLAlchemy) creates and pools connections; queries are plain SQL with `:name` parameters
run on the DB-API cursor (`Tx`), because the per-row cost of anything richer shows at 100k rows.
Connections run in autocommit mode and transactions are begun explicitly:
  reads   SQLite "BEGIN" (a WAL snapshot), PostgreSQL "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
  writes  one writer thread takes every queued write operation (up to write_batch_max), stores the
          bodies they bring in the blob store (segments: one fsync; PostgreSQL: in the transaction),
          then runs them in ONE transaction, each inside its own SAVEPOINT (group commit). An operation
          that raises is rolled back alone and its caller gets the exception; the others commit. When
          COMMIT returns, everything is durable. New bodies that no operation ended up using (it failed,
          or another store process stored the same body first) are discarded before the COMMIT.
Several store processes on one PostgreSQL: each has its own writer, and their transactions meet on
row locks (a mailbox's UIDNEXT, a body's refs) and unique keys. An operation that fails on a unique
violation is run once more in the same transaction: another process committed the same thing first
(a delivery key, a keyword bit, a mailbox name), and the second run sees it and answers as if it had
come second (a duplicate, the next bit, Conflict). A group chosen as a deadlock's victim (the groups
of two processes locking rows in different orders) or failing serialization is rolled back and run
again whole, up to GROUP_RETRIES times.
Failure: a broken connection or a failed BEGIN/COMMIT gives ServiceUnavailable to every operation of
the group (nothing of it was committed) and the connection is thrown away; the next group reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from mailflow.errors import (
    Conflict,
    InsufficientStorage,
    Invalid,
    NotFound,
    QuotaExceeded,
    ServiceUnavailable,
)
from mailflow_mailbox_store import metrics
from mailflow_mailbox_store.blobs import BlobStore, PostgresBlobs

log = logging.getLogger(__name__)

T = TypeVar("T")

# Exceptions an operation raises on purpose: they roll back its savepoint and reach the caller as they are.
EXPECTED = (NotFound, Conflict, Invalid, QuotaExceeded)

_STOP = object()  # tells the writer thread to finish
GROUP_RETRIES = 3  # a group that lost a deadlock or a serialization check is run again this often
RETRY_GROUP = ("40P01", "40001")  # PostgreSQL: deadlock_detected, serialization_failure
UNIQUE_VIOLATION = "23505"
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_BINARY = re.compile(r":@([A-Za-z_]\w*)")


class Tx:
    """A cursor with small helpers. SQL uses `:name` parameters whatever the driver's own style is."""

    def __init__(self, cursor, postgres: bool, cache: dict[str, str]):
        self.cur = cursor
        self.postgres = postgres
        self._cache = cache
        self.new_blobs: dict[
            bytes, str
        ] = {}  # sha256 -> locator, for bodies the writer stored for this group

    def _sql(self, sql: str) -> str:
        """`:name` -> the driver's style; `:@name` is sent in binary on PostgreSQL (arrays of bytes)."""
        if not self.postgres:
            return sql.replace(":@", ":") if ":@" in sql else sql
        out = self._cache.get(sql)
        if out is None:
            out = _BINARY.sub(r"%(\1)b", _NAMED.sub(r"%(\1)s", sql.replace("%", "%%")))
            self._cache[sql] = out
        return out

    def run(self, sql: str, params: dict | None = None, binary: bool = False):
        """`binary`: PostgreSQL sends the results in binary (bytea as it is, not as hex text to decode:
        2.4 x faster for 100 bodies of 4 KiB)."""
        if binary and self.postgres:
            self.cur.execute(self._sql(sql), params or {}, binary=True)
        else:
            self.cur.execute(self._sql(sql), params or {})
        return self.cur

    def many(self, sql: str, rows: Sequence[dict]) -> None:
        if rows:
            self.cur.executemany(self._sql(sql), rows)

    def insert(
        self, head: str, types: Sequence[str], rows: Sequence[Sequence], tail: str = ""
    ) -> list[tuple]:
        """Many rows in one statement. `head` is "INSERT INTO t (a, b, c)", `types` the PostgreSQL type of
        each column, `rows` value tuples in that order; `tail` may add ON CONFLICT and RETURNING (whose
        rows are returned). PostgreSQL gets one array per column (`SELECT * FROM unnest(...)`: one fixed,
        prepared statement whatever the count); SQLite a multi-row VALUES. Either is far cheaper than
        a statement per row."""
        if not rows:
            return []
        returning = "RETURNING" in tail
        if self.postgres:
            cols = ", ".join(
                f"%b::{t}[]" for t in types
            )  # binary arrays: text bytea arrays are slow to build
            self.cur.execute(
                f"{head} SELECT * FROM unnest({cols}){tail}", [list(c) for c in zip(*rows, strict=True)]
            )
            return self.cur.fetchall() if returning else []
        width = len(types)
        one = "(" + ", ".join(["?"] * width) + ")"
        per = max(1, min(500, 30_000 // width))
        out: list[tuple] = []
        for i in range(0, len(rows), per):
            chunk = rows[i : i + per]
            self.cur.execute(
                f"{head} VALUES {', '.join([one] * len(chunk))}{tail}", [v for r in chunk for v in r]
            )
            if returning:
                out += self.cur.fetchall()
        return out

    def all(self, sql: str, params: dict | None = None, binary: bool = False) -> list[tuple]:
        return self.run(sql, params, binary).fetchall()

    def one(self, sql: str, params: dict | None = None) -> tuple | None:
        return self.run(sql, params).fetchone()

    def value(self, sql: str, params: dict | None = None, default: Any = None) -> Any:
        row = self.run(sql, params).fetchone()
        return default if row is None else row[0]

    @property
    def rowcount(self) -> int:
        return self.cur.rowcount

    def among(self, column: str, name: str, values: Sequence[Any], pg_type: str) -> tuple[str, dict]:
        """`column` is one of `values`: PostgreSQL "= ANY(array)" (one parameter, one plan), SQLite IN (...)."""
        if self.postgres:
            return f"{column} = ANY(CAST(:@{name} AS {pg_type}[]))", {name: list(values)}
        keys = [f"{name}_{i}" for i in range(len(values))]
        return f"{column} IN (" + ", ".join(":" + k for k in keys) + ")", dict(zip(keys, values, strict=True))


@dataclass
class WriteOp:
    fn: Callable[..., Any]
    args: tuple
    bodies: list[bytes]  # bodies to put in the blob store before the transaction (deduplicated by SHA-256)
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    exclusive: bool = False  # run in a transaction of its own (maintenance)
    queued_at: float = field(default_factory=time.monotonic)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class Database:
    def __init__(self, url: str, blobs: BlobStore | None, readers: int = 8, write_batch_max: int = 256):
        """`blobs` None: the bodies go in this database's blob_bodies table (PostgresBlobs)."""
        self.url = url
        self.postgres = url.startswith("postgresql")
        if blobs is None and not self.postgres:
            raise ValueError("bodies in the database need PostgreSQL (blobs=postgres with a sqlite URL)")
        self.blobs: BlobStore = blobs if blobs is not None else PostgresBlobs(self)
        self.write_batch_max = write_batch_max
        if not self.postgres:
            path = sa.engine.make_url(url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        kw: dict[str, Any] = dict(isolation_level="AUTOCOMMIT", pool_size=readers + 2, max_overflow=8)
        if self.postgres:
            kw.update(pool_pre_ping=False, connect_args={"connect_timeout": 5})
        else:
            kw.update(connect_args={"timeout": 30, "check_same_thread": False})
        self.engine = sa.create_engine(url, **kw)
        if not self.postgres:
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sql_cache: dict[str, str] = {}
        self.readers = ThreadPoolExecutor(readers, thread_name_prefix="store-read")
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._wconn = None

    # --- lifecycle --------------------------------------------------------------------------------

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to the newest revision (Alembic; tests name an older one). PostgreSQL: under
        an advisory lock, so several store processes starting together migrate once."""
        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        if not self.postgres:  # one real transaction for all the DDL (pysqlite would commit each statement)
            sa.event.listen(engine, "connect", _sqlite_migration_connect)
            sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        try:
            with engine.begin() as conn:
                if self.postgres:
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(5124)")
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
        finally:
            engine.dispose()
        if not self.postgres:
            with self.engine.connect() as conn:
                mode = conn.exec_driver_sql("PRAGMA journal_mode=WAL").scalar()
                if str(mode).lower() != "wal":
                    log.warning("SQLite did not switch to WAL", extra={"mode": mode})

    def start(self) -> Database:
        self._writer = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._writer.start()
        return self

    def close(self) -> None:
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join(timeout=30)
            self._writer = None
        self.readers.shutdown(wait=True)
        self.engine.dispose()

    # --- reads ------------------------------------------------------------------------------------

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.readers, self.read_sync, fn, args)

    def read_sync(self, fn: Callable[..., T], args: Iterable[Any] = ()) -> T:
        try:
            conn = self.engine.raw_connection()
        except Exception as exc:
            raise ServiceUnavailable(f"database: {type(exc).__name__}") from exc
        try:
            cur = conn.cursor()
            tx = Tx(cur, self.postgres, self._sql_cache)
            tx.run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if self.postgres else "BEGIN")
            try:
                return fn(tx, *args)
            finally:
                with contextlib.suppress(Exception):
                    cur.execute("ROLLBACK")
                cur.close()
        except EXPECTED:
            raise
        except Exception as exc:
            if _is_disconnect(exc):
                conn.invalidate()
                raise ServiceUnavailable(f"database: {type(exc).__name__}") from exc
            raise
        finally:
            conn.close()

    # --- writes -----------------------------------------------------------------------------------

    async def write(
        self, fn: Callable[..., T], *args: Any, bodies: Sequence[bytes] = (), exclusive: bool = False
    ) -> T:
        """Run fn(tx, *args) in the next group commit; bodies are stored first (tx.new_blobs)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put(WriteOp(fn, args, list(bodies), fut, loop, exclusive))
        return await fut

    def _write_loop(self) -> None:
        carry: WriteOp | object | None = None
        while True:
            op = carry if carry is not None else self._queue.get()
            carry = None
            if op is _STOP:
                break
            group = [op]
            if not op.exclusive:
                while len(group) < self.write_batch_max:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP or nxt.exclusive:
                        carry = nxt
                        break
                    group.append(nxt)
            self._run_group(group)
        if self._wconn is not None:
            with contextlib.suppress(Exception):
                self._wconn.close()

    def _connection(self):
        if self._wconn is None:
            self._wconn = self.engine.raw_connection()
        return self._wconn

    def _run_group(self, group: list[WriteOp]) -> None:
        started = time.monotonic()
        for attempt in range(GROUP_RETRIES + 1):
            try:
                results = self._try_group(group)
                break
            except Exception as exc:
                if _sqlstate(exc) in RETRY_GROUP and attempt < GROUP_RETRIES:
                    metrics.WRITE_RETRIES.labels("group").inc()
                    log.info("write group rolled back; running it again", extra={"error": repr(exc)})
                    continue
                metrics.DB_ERRORS.labels("write").inc()
                log.warning("write group failed", extra={"ops": len(group), "error": repr(exc)})
                if self._wconn is not None:
                    with contextlib.suppress(Exception):
                        self._wconn.invalidate()
                    self._wconn = None
                if disk_full(exc):
                    failure: ServiceUnavailable = InsufficientStorage(f"storage full: {type(exc).__name__}")
                else:
                    failure = ServiceUnavailable(f"database: {type(exc).__name__}")
                results = [(op, False, failure) for op in group]
                break
        metrics.WRITE_GROUP_SIZE.observe(len(group))
        metrics.WRITE_SECONDS.observe(time.monotonic() - started)
        for op, ok, value in results:
            op.loop.call_soon_threadsafe(_settle, op.future, ok, value)

    def _try_group(self, group: list[WriteOp]) -> list[tuple[WriteOp, bool, Any]]:
        """One transaction for the group: (op, ok, result or exception) each, or raises (rolled back)."""
        results: list[tuple[WriteOp, bool, Any]] = []
        conn = self._connection()
        cur = conn.cursor()
        tx = Tx(cur, self.postgres, self._sql_cache)
        tx.run("BEGIN" if self.postgres else "BEGIN IMMEDIATE")
        try:
            self._store_bodies(tx, group)
            i = 0
            while i < len(group):
                j = i + 1
                if getattr(group[i].fn, "merge", None) is not None:
                    while j < len(group) and group[j].fn is group[i].fn:
                        j += 1
                if j - i > 1 and self._run_merged(tx, group[i:j], results):
                    i = j
                    continue
                for op in group[i:j]:
                    self._run_one(tx, op, results)
                i = j
            self._discard_unused(tx)
            tx.run("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                cur.execute("ROLLBACK")
            raise
        finally:
            cur.close()
        return results

    def _run_one(self, tx: Tx, op: WriteOp, results: list, again: bool = True) -> None:
        tx.run("SAVEPOINT op")
        try:
            value = op.fn(tx, *op.args)
        except Exception as exc:
            tx.run("ROLLBACK TO SAVEPOINT op")
            tx.run("RELEASE SAVEPOINT op")
            if _is_disconnect(exc) or disk_full(exc):
                raise
            if again and self.postgres and _sqlstate(exc) == UNIQUE_VIOLATION:
                metrics.WRITE_RETRIES.labels("operation").inc()
                self._run_one(tx, op, results, again=False)
                return
            if not isinstance(exc, EXPECTED):
                log.exception("write operation failed", extra={"op": op.fn.__name__})
            results.append((op, False, exc))
        else:
            tx.run("RELEASE SAVEPOINT op")
            results.append((op, True, value))

    def _run_merged(self, tx: Tx, ops: list[WriteOp], results: list) -> bool:
        """Operations of one kind that can merge (fn.merge, e.g. deliveries) run as one call: a few
        statements for all of them instead of a few each. If the merged call fails, False: the caller
        runs them one by one, so one bad operation still fails alone."""
        args, split = ops[0].fn.merge([op.args for op in ops])
        tx.run("SAVEPOINT merged")
        try:
            value = ops[0].fn(tx, *args)
        except Exception as exc:
            tx.run("ROLLBACK TO SAVEPOINT merged")
            tx.run("RELEASE SAVEPOINT merged")
            if _is_disconnect(exc) or disk_full(exc):
                raise
            return False
        tx.run("RELEASE SAVEPOINT merged")
        results.extend((op, True, part) for op, part in zip(ops, split(value), strict=True))
        metrics.MERGED_OPS.inc(len(ops))
        return True

    def _store_bodies(self, tx: Tx, group: list[WriteOp]) -> None:
        """Put the group's new bodies in the blob store (one fsync) before the transaction uses them."""
        wanted: dict[bytes, bytes] = {}
        for op in group:
            for body in op.bodies:
                wanted.setdefault(sha256(body), body)
        if not wanted:
            return
        shas = list(wanted)
        known: set[bytes] = set()
        for i in range(0, len(shas), 500):
            chunk = shas[i : i + 500]
            clause, params = tx.among("sha256", "s", chunk, "bytea")
            known.update(bytes(r[0]) for r in tx.all(f"SELECT sha256 FROM blobs WHERE {clause}", params))
        new = [s for s in shas if s not in known]
        if new:
            locators = self.blobs.put_many(tx, [wanted[s] for s in new])
            tx.new_blobs = dict(zip(new, locators, strict=True))
            metrics.BLOB_BYTES.inc(sum(len(wanted[s]) for s in new))

    def _discard_unused(self, tx: Tx) -> None:
        """Bodies stored for this group that no `blobs` row points at: their operation failed or stored
        nothing (a duplicate, over quota), or another store process stored the same body first."""
        if not tx.new_blobs or not self.blobs.transactional:
            return
        shas = list(tx.new_blobs)
        used: dict[bytes, str] = {}
        for i in range(0, len(shas), 500):
            clause, params = tx.among("sha256", "s", shas[i : i + 500], "bytea")
            used.update((bytes(r[0]), r[1]) for r in tx.all(f"SELECT sha256, locator FROM blobs WHERE {clause}", params))
        unused = [loc for sha, loc in tx.new_blobs.items() if used.get(sha) != loc]
        if unused:
            self.blobs.discard(tx, unused)
        tx.new_blobs = {}


def _settle(fut: asyncio.Future, ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # WAL + FULL: a committed transaction survives power loss
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA cache_size=-32768")
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()


def _psycopg_operational() -> tuple[type, ...]:
    try:
        import psycopg
    except ImportError:
        return ()
    return (psycopg.OperationalError, psycopg.InterfaceError)


def _sqlite_migration_connect(dbapi_conn, record) -> None:
    """Foreign keys off while migrating: rebuilding a parent table (migration 0004) drops it for a moment,
    which SQLite would refuse (or cascade) with them on. A migration that rebuilds checks them itself."""
    _sqlite_pragmas(dbapi_conn, record)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=OFF")
    cur.close()
    dbapi_conn.isolation_level = None


def disk_full(exc: BaseException | None) -> bool:
    """The disk under the blobs or the database is full: ENOSPC/EDQUOT from a write, SQLite's
    SQLITE_FULL, PostgreSQL's disk_full (SQLSTATE 53100), or any of these as the cause of `exc`."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc):
            return True
        if getattr(exc, "sqlstate", None) == "53100":
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _sqlstate(exc: BaseException) -> str | None:
    """PostgreSQL's SQLSTATE of a psycopg error (None for anything else)."""
    return getattr(exc, "sqlstate", None) if type(exc).__module__.startswith("psycopg") else None


def _is_disconnect(exc: BaseException) -> bool:
    """A lost connection or a database that cannot be used right now (locked, shut down); also a deadlock
    or serialization failure, which roll the whole transaction back (the writer runs the group again)."""
    name = type(exc).__name__
    module = type(exc).__module__
    if module.startswith("psycopg"):
        return name in ("OperationalError", "InterfaceError") or isinstance(exc, _psycopg_operational())
    if module.startswith("sqlite3"):
        return name == "OperationalError" and any(
            w in str(exc) for w in ("locked", "disk I/O", "unable to open")
        )
    return False
