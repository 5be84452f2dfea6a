"""SQLite schema, migrations, row mapping and the `MetadataView` over an open transaction.

Split from sqlite.py so the store module is only about threading, batching and errors.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from .base import TERMINAL, ItemRecord, RunFilter, RunRecord, StepRecord
from .events import encode_event

# Schema migrations: entry i upgrades `PRAGMA user_version` i → i + 1. Append only.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE journal (
            root_run_id TEXT NOT NULL, sequence INTEGER NOT NULL, timestamp TEXT NOT NULL,
            event TEXT NOT NULL, PRIMARY KEY (root_run_id, sequence)) WITHOUT ROWID""",
        # last_sequence survives compaction so sequences never repeat; finalized marks G5 records.
        """CREATE TABLE journal_roots (
            root_run_id TEXT PRIMARY KEY, last_sequence INTEGER NOT NULL,
            finalized INTEGER NOT NULL DEFAULT 0)""",
        """CREATE TABLE checkpoints (
            root_run_id TEXT PRIMARY KEY, sequence INTEGER NOT NULL, data BLOB NOT NULL)""",
        """CREATE TABLE leases (
            root_run_id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL)""",
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY, root_run_id TEXT NOT NULL, parent_run_id TEXT,
            flow_id TEXT NOT NULL, flow_name TEXT, status TEXT NOT NULL, created_at TEXT NOT NULL,
            completed_at TEXT, variables TEXT NOT NULL, overrides TEXT, max_concurrency INTEGER,
            created_at_seqno INTEGER NOT NULL, finished_at_seqno INTEGER)""",
        "CREATE INDEX runs_root ON runs (root_run_id)",
        "CREATE INDEX runs_parent ON runs (parent_run_id)",
        "CREATE INDEX runs_created ON runs (created_at, created_at_seqno)",
        """CREATE TABLE items (
            run_id TEXT NOT NULL, item_index INTEGER NOT NULL, status TEXT NOT NULL,
            result TEXT, completed_at TEXT, PRIMARY KEY (run_id, item_index)) WITHOUT ROWID""",
        """CREATE TABLE steps (
            run_id TEXT NOT NULL, item_index INTEGER NOT NULL, step_index INTEGER NOT NULL,
            step_id TEXT, status TEXT NOT NULL, attempts INTEGER NOT NULL, task_id TEXT,
            result TEXT, journal_seqno INTEGER NOT NULL, updated_at TEXT,
            PRIMARY KEY (run_id, item_index, step_index)) WITHOUT ROWID""",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)
TERMINAL_SQL = ",".join(f"'{s}'" for s in sorted(TERMINAL))
RUN_COLUMNS = (
    "run_id, root_run_id, parent_run_id, flow_id, flow_name, status, created_at, completed_at,"
    " variables, overrides, max_concurrency, created_at_seqno, finished_at_seqno"
)
STEP_COLUMNS = (
    "run_id, item_index, step_index, step_id, status, attempts, task_id, result, journal_seqno,"
    " updated_at"
)


def dump_json(value: Any) -> str | None:
    return None if value is None else encode_event(value)


def load_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def step_from_row(row: sqlite3.Row) -> StepRecord:
    return StepRecord(
        run_id=row[0],
        item_index=row[1],
        step_index=row[2],
        step_id=row[3],
        status=row[4],
        attempts=row[5],
        task_id=row[6],
        result=load_json(row[7]),
        journal_seqno=row[8],
        updated_at=row[9],
    )


def load_run(conn: sqlite3.Connection, row: sqlite3.Row) -> RunRecord:
    items = [
        ItemRecord(i[0], i[1], load_json(i[2]), i[3])
        for i in conn.execute(
            "SELECT item_index, status, result, completed_at FROM items"
            " WHERE run_id = ? ORDER BY item_index",
            (row[0],),
        )
    ]
    return RunRecord(
        run_id=row[0],
        root_run_id=row[1],
        parent_run_id=row[2],
        flow_id=row[3],
        flow_name=row[4],
        status=row[5],
        created_at=row[6],
        completed_at=row[7],
        items=items,
        variables=load_json(row[8]),
        overrides=load_json(row[9]),
        max_concurrency=row[10],
        created_at_seqno=row[11],
        finished_at_seqno=row[12],
    )


class SqlView:
    """`MetadataView` on the open append transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn

    def run_status(self, run_id: str) -> str | None:
        row = self._c.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else str(row[0])

    def insert_run(self, run: RunRecord) -> None:
        self._c.execute(
            f"INSERT INTO runs ({RUN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                run.run_id,
                run.root_run_id,
                run.parent_run_id,
                run.flow_id,
                run.flow_name,
                run.status,
                run.created_at,
                run.completed_at,
                encode_event(run.variables),
                dump_json(run.overrides),
                run.max_concurrency,
                run.created_at_seqno,
                run.finished_at_seqno,
            ),
        )
        self._c.executemany(
            "INSERT INTO items (run_id, item_index, status, result, completed_at)"
            " VALUES (?,?,?,?,?)",
            [
                (run.run_id, i.item_index, i.status, dump_json(i.result), i.completed_at)
                for i in run.items
            ],
        )

    def put_item(self, run_id: str, item: ItemRecord) -> None:
        self._c.execute(
            "UPDATE items SET status = ?, result = ?, completed_at = ?"
            " WHERE run_id = ? AND item_index = ?",
            (item.status, dump_json(item.result), item.completed_at, run_id, item.item_index),
        )

    def item_indices(self, run_id: str, status: str) -> list[int]:
        rows = self._c.execute(
            "SELECT item_index FROM items WHERE run_id = ? AND status = ? ORDER BY item_index",
            (run_id, status),
        )
        return [int(r[0]) for r in rows]

    def set_run_status(
        self, run_id: str, status: str, completed_at: str, finished_at_seqno: int
    ) -> None:
        self._c.execute(
            "UPDATE runs SET status = ?, completed_at = ?, finished_at_seqno = ? WHERE run_id = ?",
            (status, completed_at, finished_at_seqno, run_id),
        )

    def get_step(self, run_id: str, item_index: int, step_index: int) -> StepRecord | None:
        row = self._c.execute(
            f"SELECT {STEP_COLUMNS} FROM steps"
            " WHERE run_id = ? AND item_index = ? AND step_index = ?",
            (run_id, item_index, step_index),
        ).fetchone()
        return None if row is None else step_from_row(row)

    def put_step(self, step: StepRecord) -> None:
        self._c.execute(
            f"INSERT OR REPLACE INTO steps ({STEP_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                step.run_id,
                step.item_index,
                step.step_index,
                step.step_id,
                step.status,
                step.attempts,
                step.task_id,
                dump_json(step.result),
                step.journal_seqno,
                step.updated_at,
            ),
        )


def holds_lease(conn: sqlite3.Connection, root_run_id: str, owner: str) -> bool:
    row = conn.execute(
        "SELECT owner, expires_at FROM leases WHERE root_run_id = ?", (root_run_id,)
    ).fetchone()
    return row is not None and row[0] == owner and row[1] > time.time()


def run_where(f: RunFilter) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("status", f.status),
        ("flow_name", f.flow_name),
        ("root_run_id", f.root_run_id),
        ("parent_run_id", f.parent_run_id),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if f.roots_only:
        clauses.append("parent_run_id IS NULL")
    return clauses, params
