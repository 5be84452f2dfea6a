"""SubmitRun / GetRun from running components (worker-protocol.md §3.8), served by a node.

A submitted run is a new root run. Divergence from upstream: a repeated call with the same
(root run, subflow key) returns the run the first call created, so a component retried after a
crash does not start its sub-work twice.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from .._pb.stepflow.v1 import common_pb2, orchestrator_pb2
from ..worker_api.convert import from_struct, from_value
from . import messages

if TYPE_CHECKING:
    from .node import Node


def _uuid(text: str, field: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ValueError(f"{field} is not a UUID: {text!r}") from None


class NodeRunCalls:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._by_key: dict[tuple[str, str], str] = {}

    def _check_caller(self, request: Any) -> str | None:
        if not request.HasField("root_run_id"):
            return None
        root = _uuid(request.root_run_id, "root_run_id")
        if not self.node.is_local(root):
            raise LookupError(f"run {root} is not active on this node")
        return root

    async def submit_run(self, request: Any) -> Any:
        root = self._check_caller(request)
        key = (root, request.subflow_key) if root and request.HasField("subflow_key") else None
        run_request = request.run_request
        run_id = self._by_key.get(key) if key else None
        if run_id is None:
            overrides = (
                from_struct(run_request.overrides) if run_request.HasField("overrides") else None
            )
            limit = run_request.max_concurrency if run_request.HasField("max_concurrency") else 10
            run_id = await self.node.create_run(
                run_request.flow_id,
                [from_value(v) for v in run_request.input],
                {k: from_value(v) for k, v in run_request.variables.items()},
                overrides,
                max(1, limit),
            )
            if key:
                self._by_key[key] = run_id
        if run_request.wait:
            timeout = run_request.timeout_secs if run_request.HasField("timeout_secs") else None
            await self.node.wait(run_id, timeout)
        return await self._status(run_id, include_results=run_request.wait)

    async def get_run(self, request: Any) -> Any:
        self._check_caller(request)
        run_id = _uuid(request.run_id, "run_id")
        await self.node.get_run(run_id)
        if request.wait:
            timeout = request.timeout_secs if request.HasField("timeout_secs") else None
            await self.node.wait(run_id, timeout)
        by_completion = request.result_order == common_pb2.RESULT_ORDER_BY_COMPLETION
        return await self._status(run_id, request.include_results or request.wait, by_completion)

    async def _status(self, run_id: str, include_results: bool, by_completion: bool = False) -> Any:
        run = await self.node.get_run(run_id)
        summary = messages.run_summary(run, self.node.node_id)
        status = orchestrator_pb2.OrchestratorRunStatus(
            run_id=summary.run_id,
            flow_id=summary.flow_id,
            status=summary.status,
            items=summary.items,
            created_at=summary.created_at,
            root_run_id=summary.root_run_id,
            created_at_seqno=summary.created_at_seqno,
        )
        if summary.HasField("flow_name"):
            status.flow_name = summary.flow_name
        if summary.HasField("completed_at"):
            status.completed_at.CopyFrom(summary.completed_at)
        if summary.HasField("parent_run_id"):
            status.parent_run_id = summary.parent_run_id
        if include_results and run.status != "running":
            status.results.extend(messages.item_results(run, by_completion))
        return status
