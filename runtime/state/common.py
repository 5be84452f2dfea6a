"""Backend-independent helpers: store timestamps, run filtering/ordering, the final record.

Kept in one place so the memory and SQLite stores (and later etcd) agree on formats and order.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime

from .base import RunFilter, RunRecord
from .events import RUN_COMPLETED, Event

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width, so text order is time order


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_FORMAT)


def canonical_time(text: str) -> str:
    """Any RFC 3339 time → the store's fixed-width UTC form (comparable as text)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_time(moment)


class Clock:
    """RFC 3339 UTC timestamps with microseconds, strictly increasing per store instance.

    Strictness keeps "newest first" well defined even when two runs start in one microsecond.
    The seconds prefix is cached: formatting runs once per event on the append path.
    """

    def __init__(self) -> None:
        self._last = 0  # µs since the epoch
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        micros = max(time.time_ns() // 1000, self._last + 1)
        self._last = micros
        second, fraction = divmod(micros, 1_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{fraction:06d}Z"


def matches(run: RunRecord, filters: RunFilter) -> bool:
    return (
        (filters.status is None or run.status == filters.status)
        and (filters.flow_name is None or run.flow_name == filters.flow_name)
        and (filters.root_run_id is None or run.root_run_id == filters.root_run_id)
        and (filters.parent_run_id is None or run.parent_run_id == filters.parent_run_id)
        and (not filters.roots_only or run.parent_run_id is None)
    )


def newest_first(runs: Iterable[RunRecord]) -> list[RunRecord]:
    """Creation time, then creation sequence (orders runs created in one append), then id.

    Time leads because sequences are per root tree and so not comparable across trees.
    """
    return sorted(runs, key=lambda r: (r.created_at, r.created_at_seqno, r.run_id), reverse=True)


def final_record(run: RunRecord) -> Event:
    """The one entry a finalized journal keeps (durability.md §15 G5)."""
    return {
        "type": RUN_COMPLETED,
        "run_id": run.run_id,
        "status": run.status,
        "final": True,
        "items": [item.result for item in sorted(run.items, key=lambda i: i.item_index)],
    }


def not_finished(root_run_id: str, status: str) -> str:
    return f"run tree {root_run_id} is still {status}: only finished trees can be finalized"
