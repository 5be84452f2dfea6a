"""Client-facing gRPC services of a node: Health, Flows, Runs, Components (worker-protocol §1).

Each method maps node errors to gRPC status codes; nothing a client sends can crash the node.
The REST layer calls the same methods with the same messages.
"""

from __future__ import annotations

import functools
import logging
import platform
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import timestamp_pb2

from .._pb.stepflow.v1 import (
    common_pb2,
    components_pb2,
    components_pb2_grpc,
    flows_pb2,
    flows_pb2_grpc,
    health_pb2,
    health_pb2_grpc,
    runs_pb2,
    runs_pb2_grpc,
)
from ..blobs import is_blob_id
from ..errors import UserError
from ..model import parse_flow
from ..state.base import RunFilter, StateStore, StoreUnavailable
from ..validation import validate
from ..worker_api.convert import from_struct, from_value, to_struct, to_value
from . import messages
from .events import follow_run
from .node import InvalidRequest, Node, NotFound

log = logging.getLogger("stepflow.api")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
DIAGNOSTIC_LEVELS = {
    "fatal": flows_pb2.DIAGNOSTIC_LEVEL_FATAL,
    "error": flows_pb2.DIAGNOSTIC_LEVEL_ERROR,
    "warning": flows_pb2.DIAGNOSTIC_LEVEL_WARNING,
}


class FailedPrecondition(Exception):
    pass


def _status_errors(method: F) -> F:
    """Node exceptions → gRPC status; unexpected ones → INTERNAL (logged, node keeps running)."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(self, request, context)
        except NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except (InvalidRequest, UserError, ValueError, TypeError) as exc:
            text = str(exc)
            code = grpc.StatusCode.INVALID_ARGUMENT
            if text.startswith(("RUN_NOT_DELETABLE", "METADATA_NOT_CONSISTENT")):
                code = grpc.StatusCode.FAILED_PRECONDITION
            await context.abort(code, text)
        except FailedPrecondition as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except StoreUnavailable as exc:  # the cluster's etcd is down: retry later, never hang
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    return wrapper  # type: ignore[return-value]


def _run_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise InvalidRequest(f"run_id is not a UUID: {text!r}") from None


def _flow_id(text: str) -> str:
    if not is_blob_id(text):
        raise InvalidRequest(f"flow_id must be 64 lowercase hex characters: {text!r}")
    return text


class HealthServicer(health_pb2_grpc.HealthServiceServicer):
    async def HealthCheck(self, request: Any, context: Any) -> Any:
        now = timestamp_pb2.Timestamp()
        now.FromNanoseconds(time.time_ns())
        build = health_pb2.BuildInfo(
            git_version="stepflow-mesh 0.1.0",
            rustc_version=f"python {platform.python_version()}",
            profile="release",
            target=sys.platform,
        )
        return health_pb2.HealthCheckResponse(status="healthy", timestamp=now, build=build)


class FlowsServicer(flows_pb2_grpc.FlowsServiceServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    @_status_errors
    async def StoreFlow(self, request: Any, context: Any) -> Any:
        document = from_struct(request.flow)
        diagnostics = flows_pb2.Diagnostics()
        try:
            flow = parse_flow(document, "flow")
            found = validate(flow, self.node.config, self.node.runtime.router)
        except UserError as exc:
            found = []
            diagnostics.diagnostics.add(
                kind="parse", code=0, level=flows_pb2.DIAGNOSTIC_LEVEL_FATAL, formatted=str(exc)
            )
            diagnostics.num_fatal = 1
        for d in found:
            diagnostics.diagnostics.add(
                kind="validation", code=d.code, level=DIAGNOSTIC_LEVELS[d.level],
                formatted=d.message, path=d.path,
            )  # fmt: skip
            if d.level == "fatal":
                diagnostics.num_fatal += 1
            elif d.level == "error":
                diagnostics.num_error += 1
            else:
                diagnostics.num_warning += 1
        from ..state.recorder import flow_id_of

        flow_id = flow_id_of(document)
        stored = not request.dry_run and diagnostics.num_fatal == 0
        if stored:
            await self.node.blobs.put_json(document, "flow")
        return flows_pb2.StoreFlowResponse(flow_id=flow_id, stored=stored, diagnostics=diagnostics)

    @_status_errors
    async def GetFlow(self, request: Any, context: Any) -> Any:
        flow = await self.node.load_flow(_flow_id(request.flow_id))
        response = flows_pb2.GetFlowResponse(flow=to_struct(flow.raw), flow_id=request.flow_id)
        for example in (flow.test or {}).get("cases") or []:
            if isinstance(example, dict) and "input" in example:
                response.all_examples.add(
                    name=str(example.get("name", "")), input=to_value(example["input"])
                )
        return response

    @_status_errors
    async def DeleteFlow(self, request: Any, context: Any) -> Any:
        await self.node.load_flow(_flow_id(request.flow_id))  # NOT_FOUND when unknown
        return flows_pb2.DeleteFlowResponse()  # content-addressed blobs are kept (runs use them)

    @_status_errors
    async def GetFlowVariables(self, request: Any, context: Any) -> Any:
        flow = await self.node.load_flow(_flow_id(request.flow_id))
        schema = flow.schema_part("variables") or {}
        required = set(schema.get("required") or [])
        response = flows_pb2.GetFlowVariablesResponse(flow_id=request.flow_id)
        for name, spec in flow.variables().items():
            prop = (schema.get("properties") or {}).get(name) or {}
            variable = response.variables[name]
            variable.required = name in required
            if isinstance(prop, dict):
                if "description" in prop:
                    variable.description = str(prop["description"])
                variable.schema.CopyFrom(to_struct(prop))
            if spec.has_default:
                variable.default_value.CopyFrom(to_value(spec.default))
            if spec.env_var:
                variable.env_var = spec.env_var
        return response


class RunsServicer(runs_pb2_grpc.RunsServiceServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    @property
    def store(self) -> StateStore:
        return self.node.store

    async def _summary(self, run_id: str) -> Any:
        return messages.run_summary(await self.node.get_run(run_id), self.node.node_id)

    async def _item_results(self, run_id: str, by_completion: bool = False) -> list[Any]:
        return messages.item_results(await self.node.get_run(run_id), by_completion)

    @_status_errors
    async def CreateRun(self, request: Any, context: Any) -> Any:
        overrides = from_struct(request.overrides) if request.HasField("overrides") else None
        if overrides is not None and not isinstance(overrides.get("steps", {}), dict):
            raise InvalidRequest("overrides must look like {steps: {<step id>: {value: ...}}}")
        max_concurrency = request.max_concurrency if request.HasField("max_concurrency") else 10
        run_id = await self.node.create_run(
            _flow_id(request.flow_id),
            [from_value(v) for v in request.input],
            {k: from_value(v) for k, v in request.variables.items()},
            overrides,
            max(1, max_concurrency),
        )
        response = runs_pb2.CreateRunResponse()
        if request.wait:
            timeout = request.timeout_secs if request.HasField("timeout_secs") else None
            await self.node.wait(run_id, timeout)
        response.summary.CopyFrom(await self._summary(run_id))
        if request.wait and response.summary.status != common_pb2.EXECUTION_STATUS_RUNNING:
            response.results.extend(await self._item_results(run_id))
        return response

    @_status_errors
    async def ListRuns(self, request: Any, context: Any) -> Any:
        status = None
        if request.HasField("status"):
            status = messages.STATUS_NAMES.get(request.status)
        filters = RunFilter(
            status=status,
            flow_name=request.flow_name if request.HasField("flow_name") else None,
            root_run_id=_run_id(request.root_run_id) if request.HasField("root_run_id") else None,
            parent_run_id=(
                _run_id(request.parent_run_id) if request.HasField("parent_run_id") else None
            ),
            roots_only=request.roots_only,
            limit=request.limit if request.HasField("limit") else None,
            offset=request.offset if request.HasField("offset") else 0,
        )
        runs = await self.store.list_runs(filters)
        return runs_pb2.ListRunsResponse(
            runs=[messages.run_summary(r, self.node.node_id) for r in runs]
        )

    @_status_errors
    async def GetRun(self, request: Any, context: Any) -> Any:
        run_id = _run_id(request.run_id)
        await self.node.get_run(run_id)
        if request.wait:
            timeout = request.timeout_secs if request.HasField("timeout_secs") else None
            await self.node.wait(run_id, timeout)
        steps = await self.store.get_steps(run_id)
        return runs_pb2.GetRunResponse(
            summary=await self._summary(run_id), steps=[messages.step_status(s) for s in steps]
        )

    @_status_errors
    async def DeleteRun(self, request: Any, context: Any) -> Any:
        await self.node.delete_run(_run_id(request.run_id))
        return runs_pb2.DeleteRunResponse()

    @_status_errors
    async def CancelRun(self, request: Any, context: Any) -> Any:
        run_id = _run_id(request.run_id)
        await self.node.cancel_run(run_id)
        return runs_pb2.CancelRunResponse(summary=await self._summary(run_id))

    async def GetRunEvents(self, request: Any, context: Any) -> AsyncIterator[Any]:
        """Journal events of the run, then live ones, until it completes."""
        try:
            run = await self.node.get_run(_run_id(request.run_id))
        except NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            return
        except InvalidRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        stream = follow_run(
            self.store,
            run.root_run_id,
            run.run_id,
            since=request.since if request.HasField("since") else 0,
            event_types=frozenset(request.event_types),
            include_sub_runs=request.include_sub_runs,
            include_results=request.include_results,
        )
        async for message in stream:
            yield message

    @_status_errors
    async def GetRunItems(self, request: Any, context: Any) -> Any:
        by_completion = request.result_order == common_pb2.RESULT_ORDER_BY_COMPLETION
        results = await self._item_results(_run_id(request.run_id), by_completion)
        return runs_pb2.GetRunItemsResponse(results=results)

    @_status_errors
    async def GetRunFlow(self, request: Any, context: Any) -> Any:
        run = await self.node.get_run(_run_id(request.run_id))
        flow = await self.node.load_flow(run.flow_id)
        return runs_pb2.GetRunFlowResponse(flow=to_struct(flow.raw), flow_id=run.flow_id)

    @_status_errors
    async def GetRunSteps(self, request: Any, context: Any) -> Any:
        run_id = _run_id(request.run_id)
        await self.node.get_run(run_id)
        item = request.item_index if request.HasField("item_index") else None
        steps = await self.store.get_steps(run_id, item)
        return runs_pb2.GetRunStepsResponse(steps=[messages.step_status(s) for s in steps])

    @_status_errors
    async def GetStepDetail(self, request: Any, context: Any) -> Any:
        run_id = _run_id(request.run_id)
        await self.node.get_run(run_id)
        item = request.item_index if request.HasField("item_index") else 0
        for step in await self.store.get_steps(run_id, item):
            if step.step_id == request.step_id:
                if request.HasField("asof") and request.asof > step.journal_seqno:
                    raise FailedPrecondition(
                        f"METADATA_NOT_CONSISTENT: step is at sequence {step.journal_seqno}"
                    )
                return runs_pb2.GetStepDetailResponse(step=messages.step_status(step))
        raise NotFound(f"step {request.step_id} of item {item} has no status in run {run_id}")


class ComponentsServicer(components_pb2_grpc.ComponentsServiceServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    @_status_errors
    async def ListRegisteredComponents(self, request: Any, context: Any) -> Any:
        response = components_pb2.ListRegisteredComponentsResponse(complete=True)
        router = self.node.runtime.router
        for plugin, infos in self.node.runtime.components.items():
            for info in infos:
                entry = response.components.add(
                    component_id=info.dispatch_id, path=info.path, plugin=plugin
                )
                routes = router.routes_to(plugin, info.path)
                if routes:
                    entry.path = routes[0]
                if info.description:
                    entry.description = info.description
                if not request.exclude_schemas:
                    if isinstance(info.input_schema, dict):
                        entry.input_schema.CopyFrom(to_struct(info.input_schema))
                    if isinstance(info.output_schema, dict):
                        entry.output_schema.CopyFrom(to_struct(info.output_schema))
        return response


def register_client_services(node: Node) -> Callable[[grpc.aio.Server], None]:
    def register(server: grpc.aio.Server) -> None:
        # Generated registration functions are untyped (grpc_tools writes no stubs for them).
        health_pb2_grpc.add_HealthServiceServicer_to_server(HealthServicer(), server)  # type: ignore[no-untyped-call]
        flows_pb2_grpc.add_FlowsServiceServicer_to_server(FlowsServicer(node), server)  # type: ignore[no-untyped-call]
        runs_pb2_grpc.add_RunsServiceServicer_to_server(RunsServicer(node), server)  # type: ignore[no-untyped-call]
        components_pb2_grpc.add_ComponentsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            ComponentsServicer(node), server
        )

    return register
