"""`EtcdStateStore`: journal, checkpoints, metadata and run leases in the cluster's etcd.

Same semantics as the memory and SQLite stores (tests/state/test_store_contract.py); key layout in
etcd_keys.py (durability.md §9). Design:

- **All or nothing.** An append is one etcd transaction: its journal keys, the metadata projected
  by the shared `projection.project()` (through etcd_tree.TreeView), the tree's head key, the
  `done/{run}` keys of runs it finishes, guarded by the head's mod_revision (optimistic
  concurrency: a stale cache fails the compare, is reloaded and the append retried) and, when
  fenced, by the run lease key's create_revision recorded at acquire (mismatch → `LeaseLost`, and
  the tree is never written again until re-acquired).
- **Group commit.** Concurrent appends (any roots) queue up while a transaction is in flight and go
  out together in the next one. If a grouped transaction fails a compare, each root is retried in
  its own transaction so one bad root fails only its own appends. `batching=False` commits each
  append alone (benchmarks).
- **Outages.** A fenced append by the lease holder retries with backoff for `append_retry_secs`
  (in-flight steps keep finishing while etcd restarts); each append carries a nonce in its journal
  values, so after an unknown outcome a retry first checks whether it already landed (exactly
  once). Everything else fails fast with `StoreUnavailable` naming the endpoints.
- **Leases.** `leases` (etcd_leases.py): the node's etcd lease, the run leases attached to it, and
  the fences appends compare; the cluster member uses it directly.

Limits: a value above `large_value_bytes` (512 KiB) is spilled to `large_value_dir`
(etcd_values.py), else the write fails naming `storageConfig.largeValueDir`. A group is capped at
`max_txn_ops` operations (etcd's `--max-txn-ops`, default there 128; etcd_process uses 10000) and
about `max_txn_bytes` bytes (below etcd's `--max-request-bytes`); one append larger than that is
sent alone and etcd's refusal is reported as a StoreError naming the flag. Events of a root's
journal project only onto runs of that tree (the only ones the runtime ever writes there).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from stepflow_mesh.runtime.state.base import (
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
    StoreUnavailable,
)
from stepflow_mesh.runtime.state.common import (
    Clock,
    canonical_time,
    final_record,
    matches,
    newest_first,
    not_finished,
)
from stepflow_mesh.runtime.state.events import Event, encode_event
from stepflow_mesh.runtime.state.projection import project

from .etcd_client import (
    Compare,
    Delete,
    EtcdClient,
    EtcdError,
    EtcdSettings,
    EtcdUnavailable,
    Get,
    KeyValue,
    Op,
    Put,
    RangeResult,
    prefix_end,
)
from .etcd_errors import fail_fast, unavailable
from .etcd_keys import Keys
from .etcd_leases import RunLeases
from .etcd_tree import (
    Head,
    Staged,
    Tree,
    TreeView,
    assemble_runs,
    dumps,
    merge,
    staged_ops,
    step_from_json,
)
from .etcd_values import DEFAULT_LARGE_VALUE_BYTES, LargeValues

log = logging.getLogger("stepflow.state.etcd")

T = TypeVar("T")
SCAN_PAGE_KEYS = 100  # keys per page of the large-value reference scan (values are ≤ 512 KiB)


@dataclass(eq=False)
class _Append:
    root: str
    texts: list[str]
    owner: str | None
    future: asyncio.Future[list[int]]
    nonce: str = field(default_factory=lambda: secrets.token_hex(8))
    unknown: list[int] = field(default_factory=list)  # first sequences of attempts of unknown fate
    retry_until: float | None = None

    def cost(self) -> tuple[int, int]:
        """Rough (ops, bytes) of this append in a transaction."""
        return 3 * len(self.texts) + 4, 2 * sum(len(t) for t in self.texts) + 512


class _Conflict(Exception):
    """A transaction's compare failed."""


class EtcdStateStore(StateStore):
    """`txns` / `committed_appends` count append transactions and the appends they carried."""

    # Public beyond the ABC (used by the cluster member): client, keys, values, leases, wait_done,
    # follow.

    def __init__(
        self,
        settings: EtcdSettings,
        *,
        lease_prefix: str | None = None,
        lease_ttl_secs: int = 10,
        batching: bool = True,
        append_retry_secs: float = 300.0,
        large_value_dir: str | Path | None = None,
        large_value_bytes: int = DEFAULT_LARGE_VALUE_BYTES,
        max_txn_ops: int = 10_000,
        max_txn_bytes: int = 1_000_000,
        max_cached_trees: int = 1000,
    ) -> None:
        self.settings = settings
        self.keys = Keys(settings.prefix, lease_prefix)
        self.client = EtcdClient(settings)
        self.values = LargeValues(large_value_dir, large_value_bytes)
        self.leases = RunLeases(self.client, self.keys, lease_ttl_secs)
        self.batching = batching
        self.append_retry_secs = append_retry_secs
        self.max_txn_ops = max_txn_ops
        self.max_txn_bytes = max_txn_bytes
        self.max_cached_trees = max_cached_trees
        self.txns = 0
        self.committed_appends = 0
        self.unavailable_retries = 0  # append attempts retried because etcd was unreachable
        self._clock = Clock()
        self._faults = FaultInjector()
        self._trees: OrderedDict[str, Tree] = OrderedDict()
        self._queue: list[_Append] = []
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._root_locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        await self._fast(self.client.range(Get(self.keys.heads_dir(), count_only=True)))

    async def close(self) -> None:
        self._closed = True
        await self.leases.close()
        tasks = [t for t in (self._flusher, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for request in self._queue:
            if not request.future.done():
                request.future.set_exception(StoreError("etcd state store is closed"))
        self._queue.clear()
        await self.client.close()

    # -- error mapping -----------------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return unavailable(self.client, exc)

    async def _fast(self, call: Awaitable[T]) -> T:
        return await fail_fast(self.client, call)

    async def _decode(self, kv: KeyValue) -> bytes:
        return await self.values.decode(kv.value)

    async def _spill(self, ops: list[Op]) -> list[Op]:
        out: list[Op] = []
        for op in ops:
            if isinstance(op, Put) and self.values.needs_spill(op.value):
                what = f"etcd value {op.key.decode()}"
                op = replace(op, value=await self.values.encode(op.value, what))
            out.append(op)
        return out

    # -- leases ----------------------------------------------------------------------------------

    # -- leases (etcd_leases.py; the cluster member uses `leases` directly) ---------------------

    async def acquire_lease(self, root_run_id: str, owner: str, ttl_secs: float) -> str | None:
        return await self.leases.acquire_lease(root_run_id, owner, ttl_secs)

    async def release_lease(self, root_run_id: str, owner: str) -> None:
        await self.leases.release_lease(root_run_id, owner)

    # -- watches -----------------------------------------------------------------------------------

    async def wait_done(self, run_id: str, timeout: float) -> str | None:
        """The run's terminal status once any node finishes it; None after `timeout`."""
        key = self.keys.done(run_id)

        async def wait() -> str:
            while True:
                try:
                    found = await self.client.range(Get(key))
                    if found.kvs:
                        return str(json.loads(found.kvs[0].value)["status"])
                    async with contextlib.aclosing(
                        self.client.watch(key, None, found.revision + 1)
                    ) as events:
                        async for event in events:
                            if event.kind == "PUT":
                                return str(json.loads(event.value)["status"])
                except EtcdError as exc:
                    log.debug("done watch interrupted (%s); resuming", exc)
                    await asyncio.sleep(0.2)

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            return None

    async def follow(
        self, root_run_id: str, from_sequence: int = 0
    ) -> AsyncGenerator[JournalEntry, None]:
        """Entries ≥ `from_sequence`, then new ones as any node writes them (unbounded)."""
        directory = self.keys.journal_dir(root_run_id)
        end = prefix_end(directory)
        next_seq = from_sequence
        while True:
            try:
                found = await self.client.range(Get(self.keys.journal(root_run_id, next_seq), end))
                for kv in found.kvs:
                    entry = await self._entry(root_run_id, kv.key, kv.value)
                    next_seq = entry.sequence + 1
                    yield entry
                async with contextlib.aclosing(
                    self.client.watch(
                        self.keys.journal(root_run_id, next_seq), end, found.revision + 1
                    )
                ) as events:
                    async for event in events:
                        if event.kind != "PUT":
                            continue
                        entry = await self._entry(root_run_id, event.key, event.value)
                        if entry.sequence >= next_seq:
                            next_seq = entry.sequence + 1
                            yield entry
            except EtcdError as exc:
                log.debug("journal follow interrupted (%s); resuming", exc)
                await asyncio.sleep(0.2)

    # -- trees -----------------------------------------------------------------------------------

    async def _load_tree(self, root: str) -> Tree:
        k = self.keys
        result = await self.client.txn(
            [],
            [
                Get(k.head(root)),
                Get.prefix(k.runs_dir(root)),
                Get.prefix(k.items_dir(root)),
                Get.prefix(k.steps_dir(root)),
            ],
        )
        head, runs, items, steps = result.results
        assert isinstance(head, RangeResult) and isinstance(runs, RangeResult)
        assert isinstance(items, RangeResult) and isinstance(steps, RangeResult)
        run_kvs = [(kv.key, await self._decode(kv)) for kv in runs.kvs]
        item_kvs = [(kv.key, await self._decode(kv)) for kv in items.kvs]
        records, stored = assemble_runs(run_kvs, item_kvs)
        tree = Tree(root, Head.from_kv(head.kvs[0] if head.kvs else None), records)
        tree.stored_items = stored
        for kv in steps.kvs:
            step = step_from_json(json.loads(await self._decode(kv)))
            tree.steps[(step.run_id, step.item_index, step.step_index)] = step
        self._trees[root] = tree
        self._trees.move_to_end(root)
        while len(self._trees) > self.max_cached_trees:
            self._trees.popitem(last=False)
        return tree

    async def _tree(self, root: str) -> Tree:
        tree = self._trees.get(root)
        if tree is None:
            return await self._load_tree(root)
        self._trees.move_to_end(root)
        return tree

    def _forget(self, root: str) -> None:
        self._trees.pop(root, None)

    # -- journal: append -------------------------------------------------------------------------

    async def append(
        self, root_run_id: str, events: Sequence[Event], *, owner: str | None = None
    ) -> list[int]:
        if self._closed:
            raise StoreError("etcd state store is closed")
        texts = [encode_event(e) for e in events]  # a bad event fails here, alone
        if owner is not None:
            self.leases.check(root_run_id, owner)
        if not texts:
            return []
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        request = _Append(root_run_id, texts, owner, future)
        if self.batching:
            self._queue.append(request)
            if self._flusher is None:
                self._flusher = asyncio.get_running_loop().create_task(self._flush())
        else:
            lock = self._root_locks.setdefault(root_run_id, asyncio.Lock())
            async with lock:
                await self._commit_root(root_run_id, [request])
        return await future

    async def _flush(self) -> None:
        """Group commit: everything queued while the previous transaction was in flight."""
        try:
            while self._queue:
                batch: list[_Append] = []
                ops, size = 0, 0
                while self._queue:
                    cost_ops, cost_bytes = self._queue[0].cost()
                    fits = ops + cost_ops <= self.max_txn_ops and size + cost_bytes <= (
                        self.max_txn_bytes
                    )
                    if batch and not fits:
                        break
                    batch.append(self._queue.pop(0))
                    ops, size = ops + cost_ops, size + cost_bytes
                await self._commit_group(batch)
        finally:
            self._flusher = None

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _commit_group(self, batch: list[_Append]) -> None:
        roots = list(dict.fromkeys(r.root for r in batch))
        if len(roots) > 1:
            try:
                trees = {root: await self._tree(root) for root in roots}
                await self._attempt(batch, trees)
                return
            except (_Conflict, EtcdError):
                pass  # per root below, off the flusher so new batches keep flowing
        for root in roots:
            mine = [r for r in batch if r.root == root and not r.future.done()]
            if mine:
                self._spawn(self._commit_root(root, mine))

    async def _commit_root(self, root: str, requests: list[_Append]) -> None:
        """One root's appends until each is durable or has failed (retries, fencing, outages)."""
        delay, conflicts = 0.05, 0
        pending = [r for r in requests if not r.future.done()]
        while pending:
            try:
                await self._resolve_unknown(root, pending)
                pending = [r for r in pending if not r.future.done()]
                if not pending:
                    return
                await self._attempt(pending, {root: await self._tree(root)})
                return
            except _Conflict:
                conflicts += 1
                self._forget(root)
                if conflicts > 100:
                    self._fail(pending, StoreError(f"run tree {root}: too many write conflicts"))
                    return
            except EtcdUnavailable as exc:
                self._forget(root)
                now = time.monotonic()
                keep = []
                for r in pending:
                    if r.owner is None or self.leases.is_lost(root):
                        self._fail([r], self._unavailable(exc))
                        continue
                    self.unavailable_retries += 1
                    r.retry_until = r.retry_until or now + self.append_retry_secs
                    if now > r.retry_until:
                        self._fail([r], StoreError(f"{self._unavailable(exc)} (gave up)"))
                    else:
                        keep.append(r)
                pending = keep
                if pending:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
            except EtcdError as exc:
                self._forget(root)
                if len(pending) > 1:  # e.g. too large together: try one by one
                    for r in pending:
                        await self._commit_root(root, [r])
                    return
                self._fail(pending, StoreError(str(exc)))
                return
            except Exception as exc:  # a bug must not leave callers waiting
                log.exception("etcd append of %s failed", root)
                self._fail(pending, StoreError(f"run tree {root}: {exc!r}"))
                return
            pending = [r for r in pending if not r.future.done()]

    @staticmethod
    def _fail(requests: list[_Append], exc: BaseException) -> None:
        for request in requests:
            if not request.future.done():
                request.future.set_exception(type(exc)(str(exc)))

    async def _resolve_unknown(self, root: str, requests: list[_Append]) -> None:
        """An attempt of unknown fate may have landed: its nonce tells (exactly once)."""
        for request in requests:
            for first in request.unknown:
                kv = await self.client.get(self.keys.journal(root, first))
                if kv is None:
                    continue
                value = json.loads(await self._decode(kv))
                if value.get("n") == request.nonce:
                    sequences = list(range(first, first + len(request.texts)))
                    self.committed_appends += 1
                    request.future.set_result(sequences)
                    break
            request.unknown.clear()

    async def _attempt(self, requests: list[_Append], trees: dict[str, Tree]) -> None:
        """One transaction for `requests`; resolves their futures unless it raises.

        Raises _Conflict (a compare failed; fenced requests whose lease is gone already got
        LeaseLost) or EtcdError (the attempts are recorded as of unknown fate).
        """
        staged = {root: Staged(replace(tree.head)) for root, tree in trees.items()}
        compares: dict[bytes, Compare] = {}
        placed: list[tuple[_Append, list[int]]] = []
        timestamp = self._clock.now()
        for request in requests:
            tree = trees[request.root]
            if request.owner is not None:
                try:
                    fence = self.leases.check(request.root, request.owner)
                except LeaseLost as exc:
                    request.future.set_exception(exc)
                    continue
                key = self.keys.lease(request.root)
                compares[key] = Compare.created(key, fence.create_revision)
            child = staged[request.root].copy()
            view = TreeView(tree, child)
            first = child.head.last_sequence + 1
            try:
                for offset, text in enumerate(request.texts):
                    sequence = first + offset
                    child.head.last_sequence = sequence
                    child.head.entry_count += 1
                    value = f'{{"t":"{timestamp}","n":"{request.nonce}","e":{text}}}'
                    child.journal.append(
                        Put(self.keys.journal(request.root, sequence), value.encode())
                    )
                    project(JournalEntry(request.root, sequence, timestamp, json.loads(text)), view)
            except Exception as exc:  # a malformed event fails its own append only
                request.future.set_exception(exc)
                continue
            staged[request.root] = child
            placed.append((request, list(range(first, first + len(request.texts)))))
        if not placed:
            return
        ops: list[Op] = []
        failure: list[Op] = []
        for root in dict.fromkeys(r.root for r, _ in placed):
            guard, writes = staged_ops(self.keys, trees[root], staged[root])
            for c in guard:
                compares[c.key] = c
            ops += writes
        failure = [Get(key) for key in compares]
        ops = await self._spill(ops)
        for request, sequences in placed:
            request.unknown.append(sequences[0])
        try:
            result = await self.client.txn(list(compares.values()), ops, failure)
        except EtcdUnavailable:
            raise
        except EtcdError:
            for request, _ in placed:
                request.unknown.clear()  # refused, not applied
            raise
        for request, _ in placed:
            request.unknown.clear()
        if not result.succeeded:
            self._lost_fences(result, compares)
            raise _Conflict()
        self.txns += 1
        self.committed_appends += len(placed)
        for root in dict.fromkeys(r.root for r, _ in placed):
            merge(trees[root], staged[root], result.revision)
        self._faults.after_durable(sum(len(s) for _, s in placed))
        for request, sequences in placed:
            if not request.future.done():
                request.future.set_result(sequences)

    def _lost_fences(self, result: Any, compares: dict[bytes, Compare]) -> None:
        """After a failed compare: mark roots whose lease key is no longer ours as lost."""
        for (key, compare), found in zip(compares.items(), result.results, strict=True):
            if compare.target != "create" or not isinstance(found, RangeResult):
                continue
            actual = found.kvs[0].create_revision if found.kvs else 0
            if actual != compare.operand:
                self.leases.lose(self.keys.root_of_lease(key))

    # -- journal: reads and maintenance ----------------------------------------------------------

    async def _entry(self, root: str, key: bytes, stored: bytes) -> JournalEntry:
        value = json.loads(await self.values.decode(stored))
        return JournalEntry(root, Keys.sequence_of(key), value["t"], value["e"])

    async def read_journal(self, root_run_id: str, from_sequence: int = 0) -> list[JournalEntry]:
        end = prefix_end(self.keys.journal_dir(root_run_id))
        found = await self._fast(
            self.client.range(Get(self.keys.journal(root_run_id, max(from_sequence, 0)), end))
        )
        return [await self._entry(root_run_id, kv.key, kv.value) for kv in found.kvs]

    async def _head(self, root: str) -> Head:
        return Head.from_kv(await self._fast(self.client.get(self.keys.head(root))))

    async def latest_sequence(self, root_run_id: str) -> int | None:
        return (await self._head(root_run_id)).last_sequence or None

    async def _heads(self) -> list[tuple[str, Head]]:
        found = await self._fast(self.client.get_prefix(self.keys.heads_dir()))
        return [(self.keys.root_of_head(kv.key), Head.from_kv(kv)) for kv in found]

    async def list_active_roots(self) -> list[ActiveRoot]:
        return sorted(
            (
                ActiveRoot(root, head.last_sequence, head.entry_count)
                for root, head in await self._heads()
                if head.last_sequence and head.status not in TERMINAL
            ),
            key=lambda a: a.root_run_id,
        )

    async def _guarded(self, root: str, build: Any) -> Any:
        """Read the head, build ops with `build(head)`, commit guarded by the head; retry."""
        for _ in range(100):
            head = await self._head(root)
            plan = await build(head)
            if plan is None:
                return None
            ops, new_head, answer = plan
            ops = await self._spill([*ops, Put(self.keys.head(root), new_head.to_json())])
            guard = [Compare.modified(self.keys.head(root), head.mod_revision)]
            result = await self._fast(self.client.txn(guard, ops))
            if result.succeeded:
                self._forget(root)
                return answer
        raise StoreError(f"run tree {root}: too many write conflicts")

    async def compact(self, root_run_id: str, up_to_sequence: int) -> int:
        start = self.keys.journal(root_run_id, 0)
        end = self.keys.journal(root_run_id, up_to_sequence + 1)

        async def build(head: Head) -> tuple[list[Op], Head, int] | None:
            if not head.mod_revision:
                return None
            counted = await self._fast(self.client.range(Get(start, end, count_only=True)))
            if not counted.count:
                return None
            new = replace(head, entry_count=max(head.entry_count - counted.count, 0))
            return [Delete(start, end)], new, counted.count

        return int(await self._guarded(root_run_id, build) or 0)

    async def finalize(self, root_run_id: str) -> None:
        async def build(head: Head) -> tuple[list[Op], Head, None] | None:
            run = await self.get_run(root_run_id)
            if run is None or not head.mod_revision or head.finalized:
                return None  # gone, or another node's retention pass was first
            if run.status not in TERMINAL:
                raise ValueError(not_finished(root_run_id, run.status))
            sequence = head.last_sequence + 1
            text = encode_event(final_record(run))
            value = f'{{"t":"{self._clock.now()}","n":"final","e":{text}}}'.encode()
            start = self.keys.journal(root_run_id, 0)
            key = self.keys.journal(root_run_id, sequence)
            ops: list[Op] = [
                Delete(start, key),
                Put(key, value),
                Delete(self.keys.checkpoint(root_run_id)),
            ]
            return ops, replace(head, last_sequence=sequence, entry_count=1, finalized=True), None

        await self._guarded(root_run_id, build)

    async def delete_tree(self, root_run_id: str) -> None:
        k, root = self.keys, root_run_id
        runs = await self._fast(self.client.get_prefix(k.runs_dir(root)))
        run_ids = {json.loads(await self._decode(kv))["run_id"] for kv in runs} | {root}
        ops: list[Op] = [
            Delete.prefix(k.journal_dir(root)),
            Delete.prefix(k.runs_dir(root)),
            Delete.prefix(k.items_dir(root)),
            Delete.prefix(k.steps_dir(root)),
            Delete(k.head(root)),
            Delete(k.checkpoint(root)),
            Delete(k.lease(root)),
        ]
        for run_id in sorted(run_ids):
            ops += [Delete(k.run_index(run_id)), Delete(k.done(run_id))]
        await self._fast(self.client.txn([], ops))
        self._forget(root)
        self.leases.forget(root)

    async def collect_garbage(self) -> int:
        """Spilled large values no key of this cluster references (etcd_values.py `sweep`)."""
        if self.values.directory is None:
            return 0
        referenced, cluster_id = await self._large_value_references()
        owner = f"etcd cluster {cluster_id:x}, prefix {self.settings.prefix}"
        try:
            if not await asyncio.to_thread(self.values.owned_by, owner):
                log.warning(
                    "not sweeping %s: another cluster owns it (see its .stepflow-owner)",
                    self.values.directory,
                )
                return 0
            return await asyncio.to_thread(self.values.sweep, referenced)
        except OSError as exc:
            raise StoreError(f"cannot sweep {self.values.directory}: {exc}") from exc

    async def _large_value_references(self) -> tuple[set[str], int]:
        """Every large value the cluster's keys reference, read as of one revision, and the id
        of the etcd cluster read."""
        scan = Get.prefix(self.keys.mesh.encode())
        page = await self._fast(self.client.range(replace(scan, limit=SCAN_PAGE_KEYS)))
        cluster_id, revision = page.cluster_id, page.revision
        referenced: set[str] = set()
        while True:
            for kv in page.kvs:
                digest = self.values.digest_of(kv.value)
                if digest is not None:
                    referenced.add(digest)
            if not page.more or not page.kvs:
                return referenced, cluster_id
            start = page.kvs[-1].key + b"\x00"
            page = await self._fast(
                self.client.range(replace(scan, key=start, limit=SCAN_PAGE_KEYS, revision=revision))
            )

    # -- checkpoints -----------------------------------------------------------------------------

    async def put_checkpoint(self, root_run_id: str, sequence: int, data: bytes) -> None:
        value = dumps({"sequence": sequence}) + b"\n" + bytes(data)
        key = self.keys.checkpoint(root_run_id)
        stored = await self.values.encode(value, f"checkpoint of {root_run_id}")
        await self._fast(self.client.put(key, stored))

    async def get_checkpoint(self, root_run_id: str) -> Checkpoint | None:
        kv = await self._fast(self.client.get(self.keys.checkpoint(root_run_id)))
        if kv is None:
            return None
        header, _, data = (await self._decode(kv)).partition(b"\n")
        return Checkpoint(int(json.loads(header)["sequence"]), data)

    async def delete_checkpoint(self, root_run_id: str) -> None:
        await self._fast(self.client.delete(self.keys.checkpoint(root_run_id)))

    # -- metadata --------------------------------------------------------------------------------

    async def _root_of(self, run_id: str) -> str | None:
        kv = await self._fast(self.client.get(self.keys.run_index(run_id)))
        return None if kv is None else str(json.loads(kv.value)["root"])

    async def _runs(self, root: str | None, run_id: str | None = None) -> list[RunRecord]:
        k = self.keys
        if run_id is not None and root is not None:
            gets = [Get(k.run(root, run_id)), Get.prefix(k.items_dir(root, run_id))]
        else:
            gets = [Get.prefix(k.runs_dir(root)), Get.prefix(k.items_dir(root))]
        result = await self._fast(self.client.txn([], gets))
        runs, items = result.results
        assert isinstance(runs, RangeResult) and isinstance(items, RangeResult)
        run_kvs = [(kv.key, await self._decode(kv)) for kv in runs.kvs]
        item_kvs = [(kv.key, await self._decode(kv)) for kv in items.kvs]
        return list(assemble_runs(run_kvs, item_kvs)[0].values())

    async def get_run(self, run_id: str) -> RunRecord | None:
        root = await self._root_of(run_id)
        if root is None:
            return None
        runs = await self._runs(root, run_id)
        return runs[0] if runs else None

    async def list_runs(self, filters: RunFilter | None = None) -> list[RunRecord]:
        filters = filters or RunFilter()
        runs = [r for r in await self._runs(filters.root_run_id) if matches(r, filters)]
        page = newest_first(runs)[filters.offset :]
        return page if filters.limit is None else page[: filters.limit]

    async def get_steps(self, run_id: str, item_index: int | None = None) -> list[StepRecord]:
        root = await self._root_of(run_id)
        if root is None:
            return []
        found = await self._fast(
            self.client.get_prefix(self.keys.steps_dir(root, run_id, item_index))
        )
        steps = [step_from_json(json.loads(await self._decode(kv))) for kv in found]
        return sorted(steps, key=lambda s: (s.step_index, s.item_index))

    async def finished_roots(self, finished_before: str) -> list[str]:
        before = canonical_time(finished_before)
        done = [
            (head.completed_at, root)
            for root, head in await self._heads()
            if head.last_sequence
            and not head.finalized
            and head.status in TERMINAL
            and head.completed_at is not None
            and head.completed_at < before
        ]
        return [root for _, root in sorted(done)]
