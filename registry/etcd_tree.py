"""The etcd store's per-tree metadata cache and its `MetadataView` (staged writes → etcd ops).

A tree (root run and its sub-runs) is loaded with one snapshot read; appends project their entries
through `TreeView` into a `Staged` overlay, which becomes a list of puts committed in the same
etcd transaction as the journal entries. Only after that transaction succeeds is the overlay merged
into the cache, so a failed or refused append leaves the cache exactly as etcd has it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from stepflow_mesh.runtime.state.base import (
    CANCELLED,
    RUNNING,
    TERMINAL,
    ItemRecord,
    RunRecord,
    StepRecord,
)

from .etcd_client import Compare, KeyValue, Op, Put
from .etcd_keys import Keys, decode_id

StepKey = tuple[str, int, int]


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class Head:
    """`heads/{root}`: journal bookkeeping plus the root's status for cheap tree listings."""

    last_sequence: int = 0
    entry_count: int = 0
    finalized: bool = False
    status: str | None = None
    completed_at: str | None = None
    mod_revision: int = 0  # 0: the key does not exist

    def to_json(self) -> bytes:
        data = asdict(self)
        del data["mod_revision"]
        return dumps(data)

    @staticmethod
    def from_kv(kv: KeyValue | None) -> Head:
        if kv is None:
            return Head()
        data = json.loads(kv.value)
        return Head(
            int(data.get("last_sequence", 0)),
            int(data.get("entry_count", 0)),
            bool(data.get("finalized", False)),
            data.get("status"),
            data.get("completed_at"),
            kv.mod_revision,
        )


_RUN_FIELDS = (
    "run_id",
    "root_run_id",
    "parent_run_id",
    "flow_id",
    "flow_name",
    "status",
    "created_at",
    "completed_at",
    "variables",
    "overrides",
    "max_concurrency",
    "created_at_seqno",
    "finished_at_seqno",
)


def implicit_item(run: RunRecord, index: int) -> ItemRecord:
    """An item without a key: running, or cancelled together with its run."""
    if run.status == CANCELLED:
        return ItemRecord(index, CANCELLED, None, run.completed_at)
    return ItemRecord(index, RUNNING)


def run_to_json(run: RunRecord) -> bytes:
    data = {name: getattr(run, name) for name in _RUN_FIELDS}
    data["item_count"] = len(run.items)
    return dumps(data)


def item_to_json(item: ItemRecord) -> bytes:
    return dumps({"status": item.status, "result": item.result, "completed_at": item.completed_at})


def run_from_json(data: dict[str, Any], items: dict[int, dict[str, Any]]) -> RunRecord:
    fields: dict[str, Any] = {name: data.get(name) for name in _RUN_FIELDS}
    run = RunRecord(**fields, items=[])
    run.variables = run.variables or {}
    run.created_at_seqno = run.created_at_seqno or 0
    for index in range(int(data.get("item_count", 0))):
        stored = items.get(index)
        if stored is None:
            run.items.append(implicit_item(run, index))
        else:
            run.items.append(
                ItemRecord(
                    index, stored["status"], stored.get("result"), stored.get("completed_at")
                )
            )
    return run


def step_to_json(step: StepRecord) -> bytes:
    return dumps(asdict(step))


def step_from_json(data: dict[str, Any]) -> StepRecord:
    return StepRecord(**data)


def assemble_runs(
    run_kvs: list[tuple[bytes, bytes]], item_kvs: list[tuple[bytes, bytes]]
) -> tuple[dict[str, RunRecord], set[tuple[str, int]]]:
    """Decoded (key, value) pairs of runs and items → runs (items materialised), stored items."""
    by_run: dict[str, dict[int, dict[str, Any]]] = {}
    stored: set[tuple[str, int]] = set()
    runs_json = [json.loads(value) for _, value in run_kvs]
    for key, value in item_kvs:
        parts = key.decode().split("/")
        run_id, index = decode_id(parts[-2]), int(parts[-1])
        by_run.setdefault(run_id, {})[index] = json.loads(value)
        stored.add((run_id, index))
    runs = {r["run_id"]: run_from_json(r, by_run.get(r["run_id"], {})) for r in runs_json}
    return runs, stored


@dataclass
class Tree:
    """Cached metadata of one tree, exactly as of `head.mod_revision`."""

    root: str
    head: Head
    runs: dict[str, RunRecord] = field(default_factory=dict)
    steps: dict[StepKey, StepRecord] = field(default_factory=dict)
    stored_items: set[tuple[str, int]] = field(default_factory=set)


@dataclass
class Staged:
    """Writes of one batch to one tree, not yet committed."""

    head: Head
    journal: list[Put] = field(default_factory=list)
    runs: dict[str, RunRecord] = field(default_factory=dict)  # copies, owned by the overlay
    new_runs: set[str] = field(default_factory=set)
    dirty_runs: set[str] = field(default_factory=set)
    dirty_items: set[tuple[str, int]] = field(default_factory=set)
    steps: dict[StepKey, StepRecord] = field(default_factory=dict)
    done: dict[str, tuple[str, int]] = field(default_factory=dict)

    def copy(self) -> Staged:
        """A child overlay for one request (discarded if that request fails)."""
        return Staged(
            replace(self.head),
            list(self.journal),
            copy.deepcopy(self.runs),
            set(self.new_runs),
            set(self.dirty_runs),
            set(self.dirty_items),
            dict(self.steps),
            dict(self.done),
        )


class TreeView:
    """`MetadataView` (runtime/state/projection.py) over a cached tree plus a staged overlay."""

    def __init__(self, tree: Tree, staged: Staged) -> None:
        self.tree = tree
        self.staged = staged

    def _run(self, run_id: str) -> RunRecord | None:
        return self.staged.runs.get(run_id) or self.tree.runs.get(run_id)

    def _own(self, run_id: str) -> RunRecord:
        run = self.staged.runs.get(run_id)
        if run is None:
            run = copy.deepcopy(self.tree.runs[run_id])
            self.staged.runs[run_id] = run
        return run

    def run_status(self, run_id: str) -> str | None:
        run = self._run(run_id)
        return run.status if run else None

    def insert_run(self, run: RunRecord) -> None:
        self.staged.runs[run.run_id] = run
        self.staged.new_runs.add(run.run_id)
        self.staged.dirty_runs.add(run.run_id)

    def put_item(self, run_id: str, item: ItemRecord) -> None:
        run = self._own(run_id)
        if 0 <= item.item_index < len(run.items):
            run.items[item.item_index] = item
            self.staged.dirty_items.add((run_id, item.item_index))

    def item_indices(self, run_id: str, status: str) -> list[int]:
        run = self._run(run_id)
        return [i.item_index for i in run.items if i.status == status] if run else []

    def set_run_status(
        self, run_id: str, status: str, completed_at: str, finished_at_seqno: int
    ) -> None:
        run = self._own(run_id)
        run.status, run.completed_at = status, completed_at
        run.finished_at_seqno = finished_at_seqno
        self.staged.dirty_runs.add(run_id)
        if status in TERMINAL:
            self.staged.done[run_id] = (status, finished_at_seqno)
        if run_id == self.tree.root:
            self.staged.head.status, self.staged.head.completed_at = status, completed_at

    def get_step(self, run_id: str, item_index: int, step_index: int) -> StepRecord | None:
        key = (run_id, item_index, step_index)
        found = self.staged.steps.get(key) or self.tree.steps.get(key)
        return replace(found) if found else None

    def put_step(self, step: StepRecord) -> None:
        self.staged.steps[(step.run_id, step.item_index, step.step_index)] = step


def staged_ops(keys: Keys, tree: Tree, staged: Staged) -> tuple[list[Compare], list[Op]]:
    """The guard and the writes that commit `staged` to etcd (values not yet spilled)."""
    root = tree.root
    ops: list[Op] = list(staged.journal)
    for run_id in sorted(staged.dirty_runs):
        ops.append(Put(keys.run(root, run_id), run_to_json(staged.runs[run_id])))
    for run_id in sorted(staged.new_runs):
        ops.append(Put(keys.run_index(run_id), dumps({"root": root})))
    for run_id, index in sorted(staged.dirty_items):
        run = staged.runs[run_id]
        item = run.items[index]
        if item == implicit_item(run, index) and (run_id, index) not in tree.stored_items:
            continue  # derivable: a cancelled run's open items need no key each
        ops.append(Put(keys.item(root, run_id, index), item_to_json(item)))
    for (run_id, item_index, step_index), step in sorted(staged.steps.items()):
        ops.append(Put(keys.step(root, run_id, item_index, step_index), step_to_json(step)))
    for run_id, (status, seqno) in sorted(staged.done.items()):
        ops.append(Put(keys.done(run_id), dumps({"status": status, "finishedAtSeqno": seqno})))
    ops.append(Put(keys.head(root), staged.head.to_json()))
    return [Compare.modified(keys.head(root), tree.head.mod_revision)], ops


def merge(tree: Tree, staged: Staged, revision: int) -> None:
    """The transaction committed at `revision`: the cache now reflects it."""
    tree.runs.update(staged.runs)
    tree.steps.update(staged.steps)
    tree.stored_items.update(staged.dirty_items)
    tree.head = replace(staged.head, mod_revision=revision)
