"""What a run tree's journal says: the state a resumed executor starts from (durability.md §6).

`TreeState.apply` is the one interpretation of journal events. The journal recorder applies every
event it writes (so a checkpoint is just this state, serialised), and recovery applies the entries
after the latest checkpoint. Checkpoints are versioned JSON, so an unknown version fails loudly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import FlowResult
from . import events as ev
from .base import JournalEntry

CHECKPOINT_VERSION = 1


class ReplayError(Exception):
    """The journal or checkpoint cannot be interpreted (→ run status `recoveryFailed`)."""


Key = tuple[int, int]  # (item index, step index)


@dataclass
class RunState:
    run_id: str
    flow_id: str
    inputs: list[Any]
    variables: dict[str, Any] = field(default_factory=dict)
    parent_run_id: str | None = None
    max_concurrency: int | None = None
    overrides: dict[str, Any] | None = None
    traceparent: str | None = None  # root only: the trace the run was submitted in
    completed: dict[Key, FlowResult] = field(default_factory=dict)
    attempts: dict[Key, int] = field(default_factory=dict)
    in_flight: dict[Key, str] = field(default_factory=dict)  # → task id
    item_results: dict[int, FlowResult] = field(default_factory=dict)
    status: str | None = None  # terminal status once `run_completed` is journalled

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "flow_id": self.flow_id,
            "inputs": self.inputs,
            "variables": self.variables,
            "parent_run_id": self.parent_run_id,
            "max_concurrency": self.max_concurrency,
            "overrides": self.overrides,
            "traceparent": self.traceparent,
            "completed": [[i, s, r.to_json()] for (i, s), r in self.completed.items()],
            "attempts": [[i, s, n] for (i, s), n in self.attempts.items()],
            "in_flight": [[i, s, t] for (i, s), t in self.in_flight.items()],
            "item_results": [[i, r.to_json()] for i, r in self.item_results.items()],
            "status": self.status,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> RunState:
        return RunState(
            run_id=data["run_id"],
            flow_id=data["flow_id"],
            inputs=data["inputs"],
            variables=data["variables"],
            parent_run_id=data["parent_run_id"],
            max_concurrency=data["max_concurrency"],
            overrides=data["overrides"],
            traceparent=data.get("traceparent"),
            completed={(i, s): FlowResult.from_json(r) for i, s, r in data["completed"]},
            attempts={(i, s): n for i, s, n in data["attempts"]},
            in_flight={(i, s): t for i, s, t in data["in_flight"]},
            item_results={i: FlowResult.from_json(r) for i, r in data["item_results"]},
            status=data["status"],
        )


SubflowKey = tuple[str, int, int, str]  # (parent run id, item index, step index, subflow key)


@dataclass
class TreeState:
    root_run_id: str
    runs: dict[str, RunState] = field(default_factory=dict)
    subflows: dict[SubflowKey, str] = field(default_factory=dict)  # → sub-run id
    cancel_requested: bool = False
    last_sequence: int = -1
    created_at: str | None = None  # journal timestamp of root_run_created (RFC 3339), if known

    @property
    def root(self) -> RunState:
        try:
            return self.runs[self.root_run_id]
        except KeyError:
            raise ReplayError(f"journal of {self.root_run_id} has no root_run_created") from None

    def apply(self, event: ev.Event, sequence: int | None = None) -> None:
        """Fold one event into the state (idempotent for re-written informational events)."""
        kind = event.get("type")
        handler = self._HANDLERS.get(str(kind))
        if handler is None:
            if kind not in ev.EVENT_TYPES:
                raise ReplayError(f"unknown journal event type {kind!r}")
        else:
            handler(self, event)
        if sequence is not None:
            self.last_sequence = sequence

    def _root_created(self, event: ev.Event) -> None:
        if event["run_id"] != self.root_run_id:
            raise ReplayError(
                f"journal of {self.root_run_id} starts with another run ({event['run_id']})"
            )
        self.runs[self.root_run_id] = RunState(
            run_id=event["run_id"],
            flow_id=event["flow_id"],
            inputs=list(event["inputs"]),
            variables=dict(event.get("variables") or {}),
            max_concurrency=event.get("max_concurrency"),
            overrides=event.get("overrides"),
            traceparent=event.get("traceparent"),
        )

    def _sub_run_created(self, event: ev.Event) -> None:
        run = RunState(
            run_id=event["run_id"],
            flow_id=event["flow_id"],
            inputs=list(event["inputs"]),
            variables=dict(event.get("variables") or {}),
            parent_run_id=event["parent_run_id"],
            max_concurrency=event.get("max_concurrency"),
        )
        self.runs[run.run_id] = run
        key = (event["parent_run_id"], event["item_index"], event["step_index"])
        self.subflows[(*key, event["subflow_key"])] = run.run_id

    def _tasks_started(self, event: ev.Event) -> None:
        for group in event["runs"]:
            run = self._run(group["run_id"])
            if run is None:
                continue
            for task in group["tasks"]:
                step_key = (task["item_index"], task["step_index"])
                run.attempts[step_key] = max(run.attempts.get(step_key, 0), task["attempt"])
                run.in_flight[step_key] = task["task_id"]

    def _task_completed(self, event: ev.Event) -> None:
        run = self._run(event["run_id"])
        if run is not None:
            step_key = (event["item_index"], event["step_index"])
            run.completed[step_key] = FlowResult.from_json(event["result"])
            run.in_flight.pop(step_key, None)

    def _item_completed(self, event: ev.Event) -> None:
        run = self._run(event["run_id"])
        if run is not None:
            run.item_results[event["item_index"]] = FlowResult.from_json(event["result"])

    def _run_completed(self, event: ev.Event) -> None:
        run = self._run(event["run_id"])
        if run is None:
            return
        run.status = event["status"]
        for index, result in enumerate(event.get("items") or []):  # a finalized journal
            run.item_results[index] = FlowResult.from_json(result)
        if run.run_id != self.root_run_id:
            # A finished sub-run keeps only what its parent needs to re-read: its item results.
            run.completed.clear()
            run.attempts.clear()
            run.in_flight.clear()

    def _cancel_requested(self, event: ev.Event) -> None:
        self.cancel_requested = True

    _HANDLERS: ClassVar[dict[str, Callable[[TreeState, ev.Event], None]]] = {
        ev.ROOT_RUN_CREATED: _root_created,
        ev.SUB_RUN_CREATED: _sub_run_created,
        ev.TASKS_STARTED: _tasks_started,
        ev.TASK_COMPLETED: _task_completed,
        ev.ITEM_COMPLETED: _item_completed,
        ev.RUN_COMPLETED: _run_completed,
        ev.RUN_CANCEL_REQUESTED: _cancel_requested,
    }

    def _run(self, run_id: str) -> RunState | None:
        return self.runs.get(run_id)

    # -- checkpoints -------------------------------------------------------------------------------

    def to_checkpoint(self) -> bytes:
        body = {
            "version": CHECKPOINT_VERSION,
            "root_run_id": self.root_run_id,
            "sequence": self.last_sequence,
            "runs": [r.to_json() for r in self.runs.values()],
            "subflows": [[*k, v] for k, v in self.subflows.items()],
            "cancel_requested": self.cancel_requested,
            "created_at": self.created_at,
        }
        return json.dumps(body, separators=(",", ":")).encode("utf-8")

    @staticmethod
    def from_checkpoint(data: bytes) -> TreeState:
        try:
            body = json.loads(data)
            if body.get("version") != CHECKPOINT_VERSION:
                raise ReplayError(f"unsupported checkpoint version {body.get('version')!r}")
            tree = TreeState(body["root_run_id"], last_sequence=body["sequence"])
            for run in body["runs"]:
                state = RunState.from_json(run)
                tree.runs[state.run_id] = state
            tree.subflows = {(p, i, s, k): v for p, i, s, k, v in body["subflows"]}
            tree.cancel_requested = body["cancel_requested"]
            tree.created_at = body.get("created_at")
            return tree
        except ReplayError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise ReplayError(f"undecodable checkpoint: {exc}") from None


def replay(
    root_run_id: str, entries: list[JournalEntry], checkpoint: bytes | None = None
) -> TreeState:
    """The tree's state after the checkpoint (if any) and every entry after it."""
    tree = TreeState.from_checkpoint(checkpoint) if checkpoint else TreeState(root_run_id)
    if tree.root_run_id != root_run_id:
        raise ReplayError(f"checkpoint belongs to {tree.root_run_id}, not {root_run_id}")
    for entry in entries:
        if entry.sequence <= tree.last_sequence:
            continue
        try:
            tree.apply(entry.event, entry.sequence)
        except (KeyError, TypeError, ValueError) as exc:
            raise ReplayError(f"journal entry {entry.sequence} is malformed: {exc}") from None
        if entry.event.get("type") == ev.ROOT_RUN_CREATED:
            tree.created_at = entry.timestamp
    tree.root  # noqa: B018 - raises ReplayError when the journal never created the root
    return tree
