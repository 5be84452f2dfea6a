"""The journal writer: an executor observer that makes every state change durable first.

Awaited hooks mean nothing is dispatched before its `tasks_started` is durable and no dependant
sees a result before its `task_completed` is. Events that nothing acts on until a later write
(`steps_needed`, `steps_unblocked`, `sub_run_created`, `item_completed`, a sub-run's
`run_completed`) ride along with
the next write, so a scheduling round costs one append: if the process dies first, resume derives
them again from the durable step results. Every written event is also folded into a `TreeState`,
which is what a checkpoint stores.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .. import telemetry
from ..errors import FlowResult
from ..executor import INTERRUPTED, RunExecution, RunObserver, TaskStart
from ..jsonfmt import content_id, dumps_compact
from ..model import Step
from . import events as ev
from .base import StateStore
from .replay import TreeState
from .settings import DurabilitySettings

log = logging.getLogger("stepflow.journal")


def flow_id_of(raw: dict[str, object]) -> str:
    """The id a flow has as a `flow` blob: the content hash of its compact JSON."""
    return content_id(dumps_compact(raw).encode("utf-8"))


class JournalRecorder(RunObserver):
    def __init__(
        self,
        store: StateStore,
        tree_state: TreeState,
        owner: str | None,
        settings: DurabilitySettings,
    ) -> None:
        self.store = store
        self.state = tree_state
        self.root_run_id = tree_state.root_run_id
        self.owner = owner
        self.settings = settings
        self._pending: list[ev.Event] = []
        self._since_checkpoint = 0
        self.checkpointed = False

    async def write(self, events: Sequence[ev.Event]) -> None:
        batch = [*self._pending, *events]
        self._pending = []
        if not batch:
            return
        tel = telemetry.active
        if tel is None:
            sequences = await self.store.append(self.root_run_id, batch, owner=self.owner)
        else:  # the journal.append span and journal.* metrics
            sequences = await tel.journal_append(self.store, self.root_run_id, batch, self.owner)
        for event, sequence in zip(batch, sequences, strict=True):
            self.state.apply(event, sequence)
        self._since_checkpoint += len(batch)

    # -- observer hooks -------------------------------------------------------------------------

    async def run_started(self, run: RunExecution) -> None:
        if run.parent is None or run.recovered is not None or run.origin is None:
            return  # the root is created by the session; a recovered sub-run already exists
        self._pending.append(
            ev.sub_run_created(
                run.run_id,
                flow_id_of(run.flow.raw),
                run.inputs,
                parent_run_id=run.parent.run_id,
                item_index=run.origin.item_index,
                step_index=run.origin.step_index,
                subflow_key=run.origin.subflow_key,
                flow_name=run.flow.name,
                max_concurrency=run.max_concurrency,
            )
        )

    async def steps_needed(
        self, run: RunExecution, item_index: int, step_indices: Sequence[int]
    ) -> None:
        ids = [run.flow.steps[i].id for i in step_indices]
        self._pending.append(ev.steps_needed(run.run_id, item_index, step_indices, ids))

    async def steps_unblocked(
        self, run: RunExecution, item_index: int, step_indices: Sequence[int]
    ) -> None:
        ids = [run.flow.steps[i].id for i in step_indices]
        self._pending.append(ev.steps_unblocked(run.run_id, item_index, step_indices, ids))

    async def tasks_started(self, run: RunExecution, tasks: Sequence[TaskStart]) -> None:
        await self.write(
            [
                ev.tasks_started(
                    {
                        run.run_id: [
                            {
                                "item_index": t.item_index,
                                "step_index": t.step_index,
                                "attempt": t.attempt,
                                "task_id": t.task_id,
                                "step_id": t.step_id,
                            }
                            for t in tasks
                        ]
                    }
                )
            ]
        )

    async def tasks_completed(
        self, run: RunExecution, item_index: int, finished: Sequence[tuple[Step, FlowResult]]
    ) -> None:
        await self.write(
            [
                ev.task_completed(run.run_id, item_index, step.index, step.id, result)
                for step, result in finished
            ]
        )
        await self._maybe_checkpoint()

    async def item_completed(self, run: RunExecution, item_index: int, result: FlowResult) -> None:
        self._pending.append(ev.item_completed(run.run_id, item_index, result))

    async def run_completed(self, run: RunExecution, status: str) -> None:
        if status == INTERRUPTED or run.tree.draining:
            return  # not terminal: the run stays resumable
        self._pending.append(ev.run_completed(run.run_id, status))
        if run.parent is None:
            await self.write([])  # the root's end is what the caller is told: make it durable

    # -- checkpoints ----------------------------------------------------------------------------

    async def _maybe_checkpoint(self) -> None:
        interval = self.settings.checkpoint_interval
        if interval <= 0 or self._since_checkpoint < interval:
            return
        sequence = self.state.last_sequence
        await self.store.put_checkpoint(self.root_run_id, sequence, self.state.to_checkpoint())
        log.info(
            "Checkpoint created for run %s at sequence %d (%d entries since last)",
            self.root_run_id, sequence, self._since_checkpoint,
        )  # fmt: skip
        self._since_checkpoint = 0
        self.checkpointed = True
        if self.settings.compact_on_checkpoint:
            await self.store.compact(self.root_run_id, sequence)
