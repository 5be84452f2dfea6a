"""SQLite `StateStore`: the single-node default (`.stepflow/stepflow.db`, durability.md §8).

Every database call runs on one writer thread that owns the only connection, so the event loop
never blocks on disk and no two threads contend for SQLite's lock. Appends are group-committed:
the writer drains every pending write (appends from any run, lease renewals, checkpoints) into one
transaction (journal rows, projected metadata, per-request fencing checks in SAVEPOINTs) and pays
one fsync for all of them.
Leases are rows with a wall-clock expiry, so two processes on one machine fence each other
(durability.md §9.2).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .base import (
    TERMINAL,
    ActiveRoot,
    Checkpoint,
    FaultInjector,
    JournalEntry,
    LeaseLost,
    RunFilter,
    RunRecord,
    StateStore,
    StepRecord,
    StoreError,
)
from .common import Clock, canonical_time, final_record, not_finished
from .events import Event, encode_event
from .projection import project
from .sqlite_schema import (
    MIGRATIONS,
    RUN_COLUMNS,
    SCHEMA_VERSION,
    STEP_COLUMNS,
    TERMINAL_SQL,
    SqlView,
    holds_lease,
    load_run,
    run_where,
    step_from_row,
)

log = logging.getLogger("stepflow.state")

T = TypeVar("T")

_MAX_BATCH = 1000  # requests drained into one transaction at most


class _Batch:
    """State of one group-commit transaction: last sequences and lease checks, read once per root.

    Safe to cache: the writer holds SQLite's write lock for the whole transaction.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.view = SqlView(conn)
        self.last_sequence: dict[str, int] = {}  # updated only for requests that succeeded
        self._fences: dict[tuple[str, str], bool] = {}

    def sequence_after(self, root_run_id: str) -> int:
        if root_run_id not in self.last_sequence:
            row = self.conn.execute(
                "SELECT last_sequence FROM journal_roots WHERE root_run_id = ?", (root_run_id,)
            ).fetchone()
            self.last_sequence[root_run_id] = row[0] if row else 0
        return self.last_sequence[root_run_id]

    def flush(self) -> None:
        """Store the batch's new last sequences and forget cached reads (before other writes)."""
        self.conn.executemany(
            "INSERT INTO journal_roots (root_run_id, last_sequence) VALUES (?, ?)"
            " ON CONFLICT (root_run_id) DO UPDATE SET last_sequence = excluded.last_sequence",
            [(root, seq) for root, seq in self.last_sequence.items() if seq],
        )
        self.last_sequence.clear()
        self._fences.clear()

    def holds(self, root_run_id: str, owner: str) -> bool:
        key = (root_run_id, owner)
        if key not in self._fences:
            self._fences[key] = holds_lease(self.conn, root_run_id, owner)
        return self._fences[key]


@dataclass(eq=False)
class _Append:
    root_run_id: str
    texts: list[str]  # events as JSON text, serialised by the caller
    owner: str | None
    future: cf.Future[list[int]]


@dataclass(eq=False)
class _Write:
    """A write that joins the group transaction (in its own SAVEPOINT)."""

    fn: Callable[[sqlite3.Connection], Any]
    future: cf.Future[Any]


_Grouped = _Append | _Write


@dataclass(eq=False)
class _Call:
    fn: Callable[[], Any]
    future: cf.Future[Any]
    stop: bool = False


class SqliteStateStore(StateStore):
    """`commits` / `committed_appends` count group commits and the appends they carried."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_secs: float = 5.0,
        max_page_count: int | None = None,  # tests: simulate a full disk
    ) -> None:
        self.path = Path(path)
        self.busy_timeout_secs = busy_timeout_secs
        self._max_page_count = max_page_count
        self._faults = FaultInjector()
        self._clock = Clock()
        self._queue: queue.SimpleQueue[_Append | _Write | _Call] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None  # writer thread only
        self._closed = False
        self.commits = 0
        self.committed_appends = 0

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._writer, name="stepflow-sqlite", daemon=True)
        self._thread.start()
        try:
            await self._submit(self._open_db)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._thread is None or self._closed:
            self._closed = True
            return
        future: cf.Future[Any] = cf.Future()
        self._queue.put(_Call(self._close_db, future, stop=True))
        self._closed = True
        await asyncio.wrap_future(future)
        self._thread.join()

    def _open_db(self) -> None:
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the state directory {directory} for {self.path}: {exc.strerror}"
            ) from exc
        if self.path.is_dir():
            raise StoreError(f"state database {self.path} is a directory, expected a SQLite file")
        # Checked up front: SQLite would open read-only and fail only at the first write.
        if not os.access(directory, os.W_OK) or (
            self.path.exists() and not os.access(self.path, os.W_OK)
        ):
            raise StoreError(f"state database {self.path} or its directory is not writable")
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_secs, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._error(exc, "open the state database") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_secs * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"state database {self.path}: cannot enable WAL mode ({mode})")
            conn.execute("PRAGMA synchronous = FULL")
            if self._max_page_count is not None:
                conn.execute(f"PRAGMA max_page_count = {int(self._max_page_count)}")
            self._migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise self._error(exc, "open the state database") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"state database {self.path} has schema version {version}, newer than this"
                f" stepflow supports ({SCHEMA_VERSION}); upgrade stepflow or use another file"
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])  # raced?
            for steps in MIGRATIONS[version:]:
                for statement in steps:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _close_db(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- writer thread ---------------------------------------------------------------------------

    async def _submit(self, fn: Callable[[], T]) -> T:
        if self._closed or self._thread is None:
            raise StoreError(f"state database {self.path} is not open")
        future: cf.Future[T] = cf.Future()
        self._queue.put(_Call(fn, future))
        return await asyncio.wrap_future(future)

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` with the connection on the writer thread."""
        return await self._submit(lambda: fn(self._connection()))

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"state database {self.path} is not open")
        return self._conn

    def _writer(self) -> None:
        """Drain the queue in batches: consecutive appends share one commit, calls run alone."""
        while True:
            batch = [self._queue.get()]
            while len(batch) < _MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                if self._process(batch):
                    return
            except BaseException as exc:  # a bug here must not leave callers waiting forever
                log.exception("state database writer failed")
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(StoreError(f"{self.path}: {exc!r}"))

    def _process(self, batch: list[_Append | _Write | _Call]) -> bool:
        """Handle one batch; True once the store is closed."""
        appends: list[_Grouped] = []
        for index, request in enumerate(batch):
            if isinstance(request, _Append | _Write):
                if request.future.set_running_or_notify_cancel():
                    appends.append(request)
                continue
            self._commit_appends(appends)
            appends = []
            self._run_call(request)
            if request.stop:
                self._close_db()  # even if the closing caller went away
                for late in batch[index + 1 :]:
                    if late.future.set_running_or_notify_cancel():
                        late.future.set_exception(StoreError(f"{self.path} is closed"))
                return True
        self._commit_appends(appends)
        return False

    def _run_call(self, call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            result = call.fn()
        except sqlite3.Error as exc:
            call.future.set_exception(self._error(exc, "access the state database"))
        except BaseException as exc:
            call.future.set_exception(exc)
        else:
            call.future.set_result(result)

    def _commit_appends(self, requests: list[_Grouped]) -> None:
        """One transaction for all pending writes; a failed one (e.g. a lost fence) fails alone."""
        if not requests:
            return
        conn = self._conn
        if conn is None:
            self._fail(requests, StoreError(f"state database {self.path} is not open"))
            return
        outcomes: list[Any] = []
        batch = _Batch(conn)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for request in requests:
                conn.execute("SAVEPOINT request")
                try:
                    if isinstance(request, _Write):
                        batch.flush()
                        outcomes.append(request.fn(conn))
                        conn.execute("RELEASE request")
                        continue
                    sequences = self._append_one(batch, request)
                    conn.execute("RELEASE request")
                except Exception as exc:
                    if isinstance(exc, sqlite3.Error):
                        exc = self._error(exc, "append to the journal")
                    if not conn.in_transaction:  # SQLite rolled the whole batch back
                        raise exc from None
                    conn.execute("ROLLBACK TO request")
                    conn.execute("RELEASE request")
                    outcomes.append(exc)
                else:
                    if sequences:
                        batch.last_sequence[request.root_run_id] = sequences[-1]
                    outcomes.append(sequences)
            batch.flush()
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rollback of %s failed", self.path)
            if isinstance(exc, sqlite3.Error):
                exc = self._error(exc, "append to the journal")
            self._fail(requests, exc)
            return
        self.commits += 1
        durable = [
            o for r, o in zip(requests, outcomes, strict=True) if isinstance(r, _Append)
            and not isinstance(o, BaseException)
        ]  # fmt: skip
        self.committed_appends += len(durable)
        events = sum(len(o) for o in durable)
        if events:
            self._faults.after_durable(events)
        for request, outcome in zip(requests, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                request.future.set_exception(outcome)
            else:
                request.future.set_result(outcome)

    def _fail(self, requests: list[_Grouped], exc: BaseException) -> None:
        for request in requests:
            # A fresh exception per caller: tracebacks must not pile up on one shared object.
            copy = type(exc)(str(exc)) if isinstance(exc, StoreError) else exc
            request.future.set_exception(copy)

    def _append_one(self, batch: _Batch, request: _Append) -> list[int]:
        root, conn = request.root_run_id, batch.conn
        if request.owner is not None and not batch.holds(root, request.owner):
            raise LeaseLost(f"lease of run tree {root} is not held by {request.owner}")
        first = batch.sequence_after(root) + 1
        timestamp = self._clock.now()
        sequences = list(range(first, first + len(request.texts)))
        for sequence, text in zip(sequences, request.texts, strict=True):
            conn.execute(
                "INSERT INTO journal (root_run_id, sequence, timestamp, event) VALUES (?,?,?,?)",
                (root, sequence, timestamp, text),
            )
            project(JournalEntry(root, sequence, timestamp, json.loads(text)), batch.view)
        return sequences

    def _error(self, exc: sqlite3.Error, action: str) -> StoreError:
        """A clear, path-naming StoreError for an SQLite failure."""
        text = str(exc)
        lowered = text.lower()
        where = f"state database {self.path}"
        if "not a database" in lowered or "malformed" in lowered:
            message = (
                f"{where} is not a SQLite database or is corrupt ({text}); move it away"
                " or point storageConfig at another file"
            )
        elif "locked" in lowered or "busy" in lowered:
            message = (
                f"{where} is locked by another process (waited {self.busy_timeout_secs:g} s);"
                " stop the other stepflow process or retry"
            )
        elif "disk is full" in lowered:
            message = (
                f"{where}: disk full, cannot {action}; free space and retry"
                " (entries written before are intact)"
            )
        elif "unable to open" in lowered or "readonly" in lowered or "read-only" in lowered:
            message = f"{where} or its directory is not writable: cannot {action} ({text})"
        else:
            message = f"{where}: cannot {action}: {text}"
        return StoreError(message)

    # -- generic transactions --------------------------------------------------------------------

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` inside the next group commit (atomically, in its own SAVEPOINT)."""
        if self._closed or self._thread is None:
            raise StoreError(f"state database {self.path} is not open")
        future: cf.Future[T] = cf.Future()
        self._queue.put(_Write(fn, future))
        return await asyncio.wrap_future(future)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """One read transaction, so multi-statement reads see one snapshot."""

        def run(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        return await self._call(run)

    # -- leases ----------------------------------------------------------------------------------

    async def acquire_lease(self, root_run_id: str, owner: str, ttl_secs: float) -> str | None:
        def acquire(conn: sqlite3.Connection) -> str | None:
            now = time.time()
            row = conn.execute(
                "SELECT owner, expires_at FROM leases WHERE root_run_id = ?", (root_run_id,)
            ).fetchone()
            if row is not None and row[0] != owner and row[1] > now:
                return str(row[0])
            conn.execute(
                "INSERT OR REPLACE INTO leases (root_run_id, owner, expires_at) VALUES (?,?,?)",
                (root_run_id, owner, now + ttl_secs),
            )
            return None

        return await self._write(acquire)

    async def release_lease(self, root_run_id: str, owner: str) -> None:
        await self._write(
            lambda c: c.execute(
                "DELETE FROM leases WHERE root_run_id = ? AND owner = ?", (root_run_id, owner)
            )
        )

    # -- journal ---------------------------------------------------------------------------------

    async def append(
        self, root_run_id: str, events: Sequence[Event], *, owner: str | None = None
    ) -> list[int]:
        if self._closed or self._thread is None:
            raise StoreError(f"state database {self.path} is not open")
        texts = [encode_event(e) for e in events]  # a bad event fails here, alone
        if not texts and owner is None:
            return []
        future: cf.Future[list[int]] = cf.Future()
        self._queue.put(_Append(root_run_id, texts, owner, future))
        return await asyncio.wrap_future(future)

    async def read_journal(self, root_run_id: str, from_sequence: int = 0) -> list[JournalEntry]:
        def read(conn: sqlite3.Connection) -> list[JournalEntry]:
            rows = conn.execute(
                "SELECT sequence, timestamp, event FROM journal"
                " WHERE root_run_id = ? AND sequence >= ? ORDER BY sequence",
                (root_run_id, from_sequence),
            )
            return [JournalEntry(root_run_id, r[0], r[1], json.loads(r[2])) for r in rows]

        return await self._call(read)

    async def latest_sequence(self, root_run_id: str) -> int | None:
        def read(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(
                "SELECT last_sequence FROM journal_roots WHERE root_run_id = ?", (root_run_id,)
            ).fetchone()
            return int(row[0]) if row and row[0] else None

        return await self._call(read)

    async def list_active_roots(self) -> list[ActiveRoot]:
        def read(conn: sqlite3.Connection) -> list[ActiveRoot]:
            rows = conn.execute(
                "SELECT j.root_run_id, j.last_sequence,"
                " (SELECT COUNT(*) FROM journal e WHERE e.root_run_id = j.root_run_id)"
                " FROM journal_roots j LEFT JOIN runs r ON r.run_id = j.root_run_id"
                f" WHERE j.last_sequence > 0 AND (r.status IS NULL OR r.status NOT IN"
                f" ({TERMINAL_SQL})) ORDER BY j.root_run_id"
            )
            return [ActiveRoot(r[0], r[1], r[2]) for r in rows]

        return await self._read(read)

    async def compact(self, root_run_id: str, up_to_sequence: int) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM journal WHERE root_run_id = ? AND sequence <= ?",
                (root_run_id, up_to_sequence),
            )
            return cursor.rowcount

        return await self._write(delete)

    async def finalize(self, root_run_id: str) -> None:
        def finalize(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (root_run_id,)
            ).fetchone()
            last = conn.execute(
                "SELECT last_sequence FROM journal_roots WHERE root_run_id = ?", (root_run_id,)
            ).fetchone()
            if row is None or last is None:
                return
            run = load_run(conn, row)
            if run.status not in TERMINAL:
                raise ValueError(not_finished(root_run_id, run.status))
            sequence = last[0] + 1
            conn.execute("DELETE FROM journal WHERE root_run_id = ?", (root_run_id,))
            conn.execute(
                "INSERT INTO journal (root_run_id, sequence, timestamp, event) VALUES (?,?,?,?)",
                (root_run_id, sequence, self._clock.now(), encode_event(final_record(run))),
            )
            conn.execute(
                "UPDATE journal_roots SET last_sequence = ?, finalized = 1 WHERE root_run_id = ?",
                (sequence, root_run_id),
            )
            conn.execute("DELETE FROM checkpoints WHERE root_run_id = ?", (root_run_id,))

        await self._write(finalize)

    async def delete_tree(self, root_run_id: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            tree = "SELECT run_id FROM runs WHERE root_run_id = ?"
            conn.execute(f"DELETE FROM steps WHERE run_id IN ({tree})", (root_run_id,))
            conn.execute(f"DELETE FROM items WHERE run_id IN ({tree})", (root_run_id,))
            conn.execute("DELETE FROM runs WHERE root_run_id = ?", (root_run_id,))
            for table in ("journal", "journal_roots", "checkpoints", "leases"):
                conn.execute(f"DELETE FROM {table} WHERE root_run_id = ?", (root_run_id,))

        await self._write(delete)

    # -- checkpoints -----------------------------------------------------------------------------

    async def put_checkpoint(self, root_run_id: str, sequence: int, data: bytes) -> None:
        await self._write(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO checkpoints (root_run_id, sequence, data) VALUES (?,?,?)",
                (root_run_id, sequence, bytes(data)),
            )
        )

    async def get_checkpoint(self, root_run_id: str) -> Checkpoint | None:
        def read(conn: sqlite3.Connection) -> Checkpoint | None:
            row = conn.execute(
                "SELECT sequence, data FROM checkpoints WHERE root_run_id = ?", (root_run_id,)
            ).fetchone()
            return None if row is None else Checkpoint(row[0], bytes(row[1]))

        return await self._call(read)

    async def delete_checkpoint(self, root_run_id: str) -> None:
        await self._write(
            lambda c: c.execute("DELETE FROM checkpoints WHERE root_run_id = ?", (root_run_id,))
        )

    # -- metadata --------------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> RunRecord | None:
        def read(conn: sqlite3.Connection) -> RunRecord | None:
            row = conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            return None if row is None else load_run(conn, row)

        return await self._read(read)

    async def list_runs(self, filters: RunFilter | None = None) -> list[RunRecord]:
        f = filters or RunFilter()
        clauses, params = run_where(f)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT {RUN_COLUMNS} FROM runs{where}"
            " ORDER BY created_at DESC, created_at_seqno DESC, run_id DESC LIMIT ? OFFSET ?"
        )
        params += [-1 if f.limit is None else f.limit, f.offset]

        def read(conn: sqlite3.Connection) -> list[RunRecord]:
            return [load_run(conn, row) for row in conn.execute(sql, params).fetchall()]

        return await self._read(read)

    async def get_steps(self, run_id: str, item_index: int | None = None) -> list[StepRecord]:
        sql = f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ?"
        params: list[Any] = [run_id]
        if item_index is not None:
            sql += " AND item_index = ?"
            params.append(item_index)
        sql += " ORDER BY step_index, item_index"

        def read(conn: sqlite3.Connection) -> list[StepRecord]:
            return [step_from_row(row) for row in conn.execute(sql, params)]

        return await self._call(read)

    async def finished_roots(self, finished_before: str) -> list[str]:
        before = canonical_time(finished_before)

        def read(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT r.run_id FROM runs r JOIN journal_roots j ON j.root_run_id = r.run_id"
                f" WHERE r.parent_run_id IS NULL AND r.status IN ({TERMINAL_SQL})"
                " AND r.completed_at < ? AND j.finalized = 0 ORDER BY r.completed_at",
                (before,),
            )
            return [str(r[0]) for r in rows]

        return await self._call(read)
