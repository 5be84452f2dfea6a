"""The gRPC client side of `submit` and `runs ... --url`: reaching a node, and its answers as JSON.

A node's stepflow.v1 messages are converted into exactly the dicts the local `runs` commands print
(`runs_cmd._run_json`/`_step_json`), so scripts see one shape whichever side answered. What the
wire does not carry is marked rather than invented:

- `attempts` of a step is `null` (StepStatus has no attempt count); `taskId` is never present;
- a failure's `error` is `{code, message}` only (error `data` is not part of ItemResult/StepStatus);
- a step the node reports without a status (blocked or runnable) is `"pending"`, and a skipped
  step is `"completed"` (the node maps it so).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

from .. import telemetry
from .._pb.stepflow.v1 import common_pb2, flows_pb2, flows_pb2_grpc, runs_pb2, runs_pb2_grpc
from ..errors import UserError
from ..server.messages import RUN_STATUS, STATUS_NAMES
from ..state.common import format_time
from ..worker_api.convert import from_value, to_struct, to_value

log = logging.getLogger("stepflow.cli")

DEFAULT_PORT = 7840  # `stepflow serve`'s default
CALL_TIMEOUT_SECS = 60.0  # plain requests; waits add their own length to this
WAIT_CHUNK_SECS = 30  # one server-side wait; a longer wait is several of them
TERMINAL = frozenset(
    {
        common_pb2.EXECUTION_STATUS_COMPLETED,
        common_pb2.EXECUTION_STATUS_FAILED,
        common_pb2.EXECUTION_STATUS_CANCELLED,
        common_pb2.EXECUTION_STATUS_RECOVERY_FAILED,
    }
)
_STATUS_WORDS: dict[int, str] = {int(number): word for number, word in STATUS_NAMES.items()}


def grpc_target(url: str) -> tuple[str, bool]:
    """`host:port`, `http://host:port` or `https://host:port` → (gRPC target, use TLS)."""
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "http", text
    scheme = scheme.lower()
    if scheme not in ("http", "https", "grpc", "grpcs"):
        raise UserError(f"unsupported URL scheme {scheme!r} (use http://host:port)", "--url")
    authority, _, path = rest.partition("/")
    if path.strip("/"):
        raise UserError(f"a node URL has no path: {url!r} (use http://host:port)", "--url")
    if not authority:
        raise UserError(f"no host in {url!r} (use host:port or http://host:port)", "--url")
    host_part = authority.rsplit("]", 1)[-1]  # `[::1]:7840`: the port follows the bracket
    if ":" not in host_part:
        authority = f"{authority}:{DEFAULT_PORT}"
    else:
        port = authority.rsplit(":", 1)[1]
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"bad port in {url!r}", "--url")
    return authority, scheme in ("https", "grpcs")


def status_word(status: int, unspecified: str = "unknown") -> str:
    """ExecutionStatus number → the word the local journal uses (`completed`, `failed`, ...)."""
    if status == common_pb2.EXECUTION_STATUS_UNSPECIFIED:
        return unspecified
    return _STATUS_WORDS.get(status, unspecified)


def status_number(word: str) -> int:
    return int(RUN_STATUS[word])


def _time(message: Any, field: str) -> str | None:
    if not message.HasField(field):
        return None
    return format_time(getattr(message, field).ToDatetime(tzinfo=UTC))


def _error_code(number: int) -> str:
    try:
        name = str(common_pb2.TaskErrorCode.Name(number))
    except ValueError:
        return "UNSPECIFIED"
    return name.removeprefix("TASK_ERROR_CODE_")


def _error(message: Any) -> dict[str, Any]:
    code = _error_code(message.error_code) if message.HasField("error_code") else "UNSPECIFIED"
    return {"code": code, "message": message.error_message}


def run_json(summary: Any) -> dict[str, Any]:
    """RunSummary → the dict of `runs_cmd._run_json`."""
    out: dict[str, Any] = {
        "runId": summary.run_id,
        "flowName": summary.flow_name if summary.HasField("flow_name") else None,
        "flowId": summary.flow_id,
        "status": status_word(summary.status),
        "createdAt": _time(summary, "created_at"),
        "completedAt": _time(summary, "completed_at"),
        "itemCount": summary.items.total,
        "itemsCompleted": summary.items.completed,
        "itemsFailed": summary.items.failed,
        "itemsRunning": summary.items.running,
    }
    if summary.HasField("parent_run_id") and summary.parent_run_id:
        out["parentRunId"] = summary.parent_run_id
        out["rootRunId"] = summary.root_run_id
    return out


def step_json(step: Any) -> dict[str, Any]:
    """StepStatus → the dict of `runs_cmd._step_json` (`attempts` unknown: null)."""
    out: dict[str, Any] = {
        "stepId": step.step_id or None,
        "stepIndex": step.step_index,
        "itemIndex": step.item_index,
        "status": status_word(step.status, "pending"),
        "attempts": None,
    }
    if step.HasField("output"):
        out["result"] = from_value(step.output)
    elif step.HasField("error_message") or step.HasField("error_code"):
        out["error"] = _error(step)
    updated = _time(step, "updated_at")
    if updated:
        out["updatedAt"] = updated
    return out


def flow_result(item: Any) -> dict[str, Any] | None:
    """ItemResult → FlowResult JSON; None while the item has no result yet."""
    if item.HasField("output"):
        return {"outcome": "success", "result": from_value(item.output)}
    if item.HasField("error_message") or item.HasField("error_code"):
        return {"outcome": "failed", "error": _error(item)}
    return None


def final_result(item: Any) -> dict[str, Any]:
    """The FlowResult `submit` prints for a finished item (flows.md §10.3: neither output nor
    error → ORCHESTRATOR_ERROR)."""
    result = flow_result(item)
    if result is not None:
        return result
    word = status_word(item.status)
    return {
        "outcome": "failed",
        "error": {"code": "ORCHESTRATOR_ERROR", "message": f"item finished {word} without result"},
    }


def item_json(item: Any) -> dict[str, Any]:
    """ItemResult → the `items` entries of local `runs show`."""
    return {
        "itemIndex": item.item_index,
        "status": status_word(item.status),
        "result": flow_result(item),
    }


def event_json(event: Any) -> dict[str, Any]:
    """StatusEvent → one JSON object: `seq`, `timestamp`, `event` (snake_case kind) and its fields
    in proto order and camelCase (statuses as words, values as JSON, unset optionals left out)."""
    kind = event.WhichOneof("event")
    out: dict[str, Any] = {
        "seq": event.sequence_number,
        "timestamp": _time(event, "timestamp"),
        "event": kind or "unknown",
    }
    if kind is None:
        return out
    payload = getattr(event, kind)
    for field in payload.DESCRIPTOR.fields:
        if field.has_presence and not payload.HasField(field.name):
            continue
        value = getattr(payload, field.name)
        if field.name == "status":
            value = status_word(value)
        elif isinstance(value, struct_pb2.Value):
            value = from_value(value)
        elif isinstance(value, Message):
            value = json_format.MessageToDict(value)
        elif isinstance(value, Sequence) and not isinstance(value, str):
            value = list(value)
        out[field.json_name] = value
    return out


def event_line(event: dict[str, Any], width: int = 120) -> str:
    """One human line per event: `#seq time kind key=value ...`, long values shortened."""
    skip = {"seq", "timestamp", "event", "runId"}
    parts = [f"#{event['seq']}", event["timestamp"] or "-", event["event"]]
    for key, value in event.items():
        if key in skip:
            continue
        if isinstance(value, list) and all(isinstance(v, str | int) for v in value):
            text = ",".join(str(v) for v in value)
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            text = str(value)
        else:
            text = json.dumps(value, separators=(",", ":"))
        if len(text) > width:
            text = text[: width - 1] + "…"
        parts.append(f"{key}={text}")
    return " ".join(parts)


def normalise_id(run_id: str) -> str:
    try:
        return str(uuid.UUID(run_id.strip()))
    except ValueError:
        return run_id


class NodeClient:
    """A channel to one node; every call turns gRPC failures into one-line UserErrors."""

    def __init__(self, url: str) -> None:
        self.url = url
        target, secure = grpc_target(url)
        options = [("grpc.max_receive_message_length", -1)]
        if secure:
            credentials = grpc.ssl_channel_credentials()
            self.channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        interceptors = telemetry.sync_client_interceptors()  # W3C traceparent when tracing
        if interceptors:
            self.channel = grpc.intercept_channel(self.channel, *interceptors)
        # The generated stub constructors are untyped (grpc_tools writes no stubs for them).
        self.flows: Any = flows_pb2_grpc.FlowsServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.runs: Any = runs_pb2_grpc.RunsServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.channel.close()

    @contextlib.contextmanager
    def errors(self, method: str) -> Iterator[None]:
        try:
            yield
        except grpc.RpcError as exc:
            raise self._user_error(method, exc) from None

    def _user_error(self, method: str, exc: grpc.RpcError) -> UserError:
        code = exc.code()
        details = (exc.details() or "").strip()
        log.debug("%s failed: %s %s", method, code, details)
        if code == grpc.StatusCode.UNAVAILABLE:
            return UserError(f"cannot reach stepflow node at {self.url}")
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return UserError(
                f"the stepflow node at {self.url} does not support {method} "
                "(it runs an older version)"
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return UserError(f"the stepflow node at {self.url} did not answer {method} in time")
        if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            return UserError(details or f"{method}: {code.name}")
        first_line = details.splitlines()[0] if details else ""
        return UserError(f"{method} failed at {self.url}: {code.name} {first_line}".rstrip())

    def call(self, service: Any, method: str, request: Any, timeout: float) -> Any:
        with self.errors(method):
            return getattr(service, method)(request, timeout=timeout)

    # --- Flows -------------------------------------------------------------------------------

    def store_flow(self, document: dict[str, Any]) -> Any:
        request = flows_pb2.StoreFlowRequest(flow=to_struct(document))
        return self.call(self.flows, "StoreFlow", request, CALL_TIMEOUT_SECS)

    # --- Runs --------------------------------------------------------------------------------

    def create_run(
        self,
        flow_id: str,
        inputs: list[Any],
        variables: dict[str, Any],
        overrides: dict[str, Any] | None,
        max_concurrency: int,
        wait_secs: int | None,
    ) -> Any:
        """`wait_secs=None`: answer as soon as the run exists; else wait up to that long."""
        request = runs_pb2.CreateRunRequest(
            flow_id=flow_id,
            input=[to_value(i) for i in inputs],
            variables={k: to_value(v) for k, v in variables.items()},
            max_concurrency=max_concurrency,
        )
        if overrides is not None:
            request.overrides.CopyFrom(to_struct(overrides))
        if wait_secs is not None:
            request.wait = True
            request.timeout_secs = wait_secs
        return self.call(self.runs, "CreateRun", request, CALL_TIMEOUT_SECS + (wait_secs or 0))

    def get_run(self, run_id: str, wait_secs: int | None = None) -> Any:
        request = runs_pb2.GetRunRequest(run_id=run_id)
        if wait_secs is not None:
            request.wait = True
            request.timeout_secs = wait_secs
        return self.call(self.runs, "GetRun", request, CALL_TIMEOUT_SECS + (wait_secs or 0))

    def list_runs(self, **filters: Any) -> list[Any]:
        request = runs_pb2.ListRunsRequest(**filters)
        return list(self.call(self.runs, "ListRuns", request, CALL_TIMEOUT_SECS).runs)

    def run_items(self, run_id: str) -> list[Any]:
        request = runs_pb2.GetRunItemsRequest(run_id=run_id)
        return list(self.call(self.runs, "GetRunItems", request, CALL_TIMEOUT_SECS).results)

    def cancel_run(self, run_id: str) -> Any:
        request = runs_pb2.CancelRunRequest(run_id=run_id)
        return self.call(self.runs, "CancelRun", request, CALL_TIMEOUT_SECS).summary

    def run_events(self, run_id: str) -> Iterator[Any]:
        """The run's events from the start, live; ends when the node closes the stream."""
        request = runs_pb2.GetRunEventsRequest(run_id=run_id, include_results=True)
        with self.errors("GetRunEvents"):
            yield from self.runs.GetRunEvents(request)

    def wait_for_run(self, run_id: str, deadline: float | None) -> Any:
        """GetRun with server-side waits until the run is terminal; None if `deadline` passes."""
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            chunk = WAIT_CHUNK_SECS
            if remaining is not None:
                chunk = max(1, min(WAIT_CHUNK_SECS, int(remaining)))
            asked = time.monotonic()
            summary = self.get_run(run_id, chunk).summary
            if summary.status in TERMINAL:
                return summary
            if time.monotonic() - asked < 0.5:  # a node that cannot wait (e.g. recovered run)
                time.sleep(0.5)
