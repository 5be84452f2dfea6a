"""The REST API under `/api/v1` on the node's HTTP port (durability.md §12, §13).

Every route calls the same servicer method as its gRPC twin (worker-protocol.md §1): the request
message is built from the path, the query and the JSON body, the method runs with a small context
whose `abort` raises `RestError`, and the response message is written as JSON with camelCase names,
enums as integers and 64-bit integers as JSON numbers. Errors answer google.rpc.Status JSON
`{code, message}` with the gRPC code number. Nothing a client sends can crash the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from .. import telemetry
from .._pb.stepflow.v1 import (
    blobs_pb2,
    components_pb2,
    flows_pb2,
    health_pb2,
    runs_pb2,
)
from ..jsonfmt import dumps_compact
from ..worker_api.convert import from_struct, from_value
from ..worker_api.servicer import BlobServicer
from .api import ComponentsServicer, FlowsServicer, HealthServicer, RunsServicer
from .node import Node

log = logging.getLogger("stepflow.http")

API_PREFIX = "/api/v1"
MAX_BODY_BYTES = 250 * 1024 * 1024
SHUTDOWN_TIMEOUT_SECS = 2.0
# An event stream answers 200 once its first event arrives or after this long, whichever is first;
# errors the method reports before that (unknown run, bad id) still get their HTTP status.
SSE_FIRST_EVENT_SECS = 1.0
SSE_KEEPALIVE_SECS = 15.0

M = TypeVar("M", bound=Message)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# grpc.StatusCode → HTTP status (durability.md §13; the rest as google.rpc.Code documents them).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# aiohttp's own HTTP errors (unknown route, wrong method, body too large) → gRPC code.
GRPC_CODE = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}
_INT_TYPES = _INT64_TYPES | {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_SFIXED32,
}
_TRUE = {"", "true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_CORS_PREFLIGHT = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
    "Access-Control-Max-Age": "86400",
}


# -- errors and the servicer context ------------------------------------------------------------


class RestError(Exception):
    """A gRPC status on its way to becoming an HTTP error response."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    def body(self) -> dict[str, Any]:
        number: int = self.code.value[0]
        return {"code": number, "message": self.message}


def _invalid(message: str) -> RestError:
    return RestError(grpc.StatusCode.INVALID_ARGUMENT, message)


class RestContext:
    """What the servicers use of `grpc.aio.ServicerContext`, for calls that came over HTTP."""

    def __init__(self, request: web.Request | None = None) -> None:
        self._request = request
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._cancelled = False

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn:
        raise RestError(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_details(self, details: str) -> None:
        self._details = details

    def details(self) -> str:
        return self._details

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        pass

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        """The HTTP headers, lowercased like gRPC metadata keys (e.g. `traceparent`)."""
        if self._request is None:
            return ()
        return tuple((key.lower(), value) for key, value in self._request.headers.items())

    def peer(self) -> str:
        remote = self._request.remote if self._request is not None else None
        return f"http:{remote or 'unknown'}"

    def time_remaining(self) -> float | None:
        return None

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True

    def error_from(self, exc: NotImplementedError) -> RestError:
        """The generated base methods set UNIMPLEMENTED and raise NotImplementedError."""
        code = self._code or grpc.StatusCode.UNIMPLEMENTED
        return RestError(code, self._details or str(exc) or "method not implemented")


# -- messages ↔ JSON ----------------------------------------------------------------------------


def _is_repeated(field: FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf ≥ 6 (where `label` is deprecated)
    if isinstance(flag, bool):
        return flag
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def _is_map(field: FieldDescriptor) -> bool:
    return (
        field.type == FieldDescriptor.TYPE_MESSAGE
        and field.message_type is not None
        and field.message_type.GetOptions().map_entry
    )


def message_json(message: Message) -> dict[str, Any]:
    """durability.md §13 JSON: camelCase, enums as ints, int64 as numbers, Values as plain JSON.

    Unset optional fields are omitted; non-optional scalars and repeated fields always appear.
    """
    data = json_format.MessageToDict(
        message,
        use_integers_for_enums=True,
        preserving_proto_field_name=False,
        always_print_fields_with_no_presence=True,
    )
    _fix_message(message, data)
    return data


def _fix_message(message: Message, data: dict[str, Any]) -> None:
    for field in message.DESCRIPTOR.fields:
        key = _json_name(field)
        if key not in data:
            continue
        value = getattr(message, field.name)
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            data[key] = {
                json_key: _fix_value(value_field, value[_map_key(field, json_key)], item)
                for json_key, item in data[key].items()
            }
        elif _is_repeated(field):
            items = zip(value, data[key], strict=True)
            data[key] = [_fix_value(field, v, item) for v, item in items]
        else:
            data[key] = _fix_value(field, value, data[key])
    declared = [_json_name(field) for field in message.DESCRIPTOR.fields]
    ordered = {key: data[key] for key in declared if key in data}  # MessageToDict appends defaults
    data.clear()
    data.update(ordered)


def _map_key(field: FieldDescriptor, json_key: str) -> Any:
    key_field = field.message_type.fields_by_name["key"]
    if key_field.type in _INT_TYPES:
        return int(json_key)
    if key_field.type == FieldDescriptor.TYPE_BOOL:
        return json_key == "true"
    return json_key


def _fix_value(field: FieldDescriptor, value: Any, data: Any) -> Any:
    if field.type in _INT64_TYPES:
        return int(data)
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return data
    name = field.message_type.full_name
    if name == "google.protobuf.Value":
        return from_value(value)  # whole numbers as integers (worker-protocol.md §1.1)
    if name == "google.protobuf.Struct":
        return from_struct(value)
    if name == "google.protobuf.ListValue":
        return [from_value(v) for v in value.values]
    if name in ("google.protobuf.Int64Value", "google.protobuf.UInt64Value"):
        return int(data)
    if name.startswith("google.protobuf."):
        return data  # Timestamp, Duration, ...: their JSON forms
    _fix_message(value, data)
    return data


def json_response(data: Any, status: int = 200) -> web.Response:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return web.Response(
        body=text.encode("utf-8"), status=status, content_type="application/json", charset="utf-8"
    )


def error_response(error: RestError, headers: Any = None) -> web.Response:
    response = json_response(error.body(), error.http_status)
    if headers:
        response.headers.update(headers)
    return response


def _parse(data: dict[str, Any], message: Message, what: str) -> Message:
    try:
        return json_format.ParseDict(data, message, ignore_unknown_fields=False)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise _invalid(f"invalid {what}: {exc}") from None


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


async def json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()  # HTTPRequestEntityTooLarge past the body limit
    if not raw.strip():
        raise _invalid("the request body is empty; expected a JSON object")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise _invalid(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _invalid(f"the request body must be a JSON object, not {type(data).__name__}")
    return data


def _query_value(field: FieldDescriptor, key: str, text: str) -> Any:
    if field.type == FieldDescriptor.TYPE_BOOL:
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise _invalid(f"query parameter {key} must be true or false, not {text!r}")
    if field.type == FieldDescriptor.TYPE_ENUM:
        stripped = text.strip()
        return int(stripped) if stripped.lstrip("-").isdigit() else stripped
    if field.type in _INT_TYPES:
        stripped = text.strip()
        if not stripped.lstrip("-").isdigit():
            raise _invalid(f"query parameter {key} must be an integer, not {text!r}")
        return int(stripped)
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        try:
            return float(text)
        except ValueError:
            raise _invalid(f"query parameter {key} must be a number, not {text!r}") from None
    return text


def _json_name(field: Any) -> str:
    return str(field.json_name)  # not in the protobuf type stubs


def _field(descriptor: Descriptor, key: str) -> FieldDescriptor | None:
    """The field named `key` in JSON (camelCase) or proto (snake_case) spelling."""
    fields: list[FieldDescriptor] = list(descriptor.fields)
    for field in fields:
        if key in (_json_name(field), field.name):
            return field
    return None


def query_fields(request: web.Request, descriptor: Descriptor) -> dict[str, Any]:
    """Query parameters named like scalar fields (camelCase or snake_case) as a ParseDict dict.

    Repeated fields take repeated parameters and comma-separated lists; others are ignored.
    """
    data: dict[str, Any] = {}
    for key in set(request.query.keys()):
        field = _field(descriptor, key)
        if field is None or field.type == FieldDescriptor.TYPE_MESSAGE:
            continue
        if _is_repeated(field):
            texts = [part for v in request.query.getall(key) for part in v.split(",") if part]
            data[_json_name(field)] = [_query_value(field, key, t) for t in texts]
        else:
            data[_json_name(field)] = _query_value(field, key, request.query[key])
    return data


# -- services and calls -------------------------------------------------------------------------


@dataclass
class Services:
    """The servicer objects the routes call (the same classes the gRPC port serves)."""

    health: HealthServicer
    flows: FlowsServicer
    runs: RunsServicer
    components: ComponentsServicer
    blobs: BlobServicer

    @classmethod
    def for_node(cls, node: Node) -> Services:
        return cls(
            health=HealthServicer(),
            flows=FlowsServicer(node),
            runs=RunsServicer(node),
            components=ComponentsServicer(node),
            blobs=BlobServicer(node.blobs),
        )


SERVICES = web.AppKey("services", Services)


def implemented(servicer: Any, name: str) -> Callable[..., Any] | None:
    """`servicer.name` unless it is missing or still the generated UNIMPLEMENTED stub."""
    method = getattr(type(servicer), name, None)
    if method is None or str(getattr(method, "__module__", "")).endswith("_pb2_grpc"):
        return None
    bound: Callable[..., Any] = getattr(servicer, name)
    return bound


async def call(method: Callable[..., Any], message: Message, request: web.Request) -> Any:
    context = RestContext(request)
    try:
        return await method(message, context)
    except NotImplementedError as exc:
        raise context.error_from(exc) from None


def _request_message(
    request: web.Request, message: M, *, query: bool = False, body: dict[str, Any] | None
) -> M:
    data: dict[str, Any] = dict(body or {})
    if query:
        data.update(query_fields(request, message.DESCRIPTOR))
    what = "request body" if body is not None else "query"
    _parse(data, message, what)
    for name, value in request.match_info.items():  # path parameters win over the query
        field = _field(message.DESCRIPTOR, name)
        if field is not None:
            setattr(message, field.name, value)
    return message


def unary(
    service: str,
    method_name: str,
    request_type: Callable[[], Message],
    *,
    query: bool = False,
    body: bool = False,
) -> Handler:
    """A route that calls `Services.<service>.<method_name>` and answers its response as JSON."""

    async def handle(request: web.Request) -> web.StreamResponse:
        servicer = getattr(request.app[SERVICES], service)
        method = implemented(servicer, method_name)
        if method is None:
            raise RestError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{request.method} {request.path} is not available on this node yet "
                f"({type(servicer).__name__}.{method_name} is not implemented)",
            )
        content = await json_body(request) if body else None
        message = _request_message(request, request_type(), query=query, body=content)
        return json_response(message_json(await call(method, message, request)))

    return handle


# -- blobs --------------------------------------------------------------------------------------


async def put_blob(request: web.Request) -> web.StreamResponse:
    blobs = request.app[SERVICES].blobs
    if request.content_type == "application/octet-stream":
        message = blobs_pb2.PutBlobRequest(raw_data=await request.read(), blob_type="binary")
        filename = request.headers.get("X-Blob-Filename")
        if filename:
            message.filename = filename
    else:
        content = await json_body(request)
        if "data" in content:
            if "jsonData" in content or "json_data" in content:
                raise _invalid("give the blob content once: jsonData, json_data or data")
            content["jsonData"] = content.pop("data")
        message = blobs_pb2.PutBlobRequest()
        _parse(content, message, "request body")
    return json_response(message_json(await call(blobs.PutBlob, message, request)))


def _wants_bytes(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "").lower()
    return "application/octet-stream" in accept and "application/json" not in accept


def content_disposition(filename: str) -> str:
    plain = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    value = f'attachment; filename="{plain}"'
    if plain != filename:
        value += "; filename*=UTF-8''" + urllib.parse.quote(filename, safe="")
    return value


async def get_blob(request: web.Request) -> web.StreamResponse:
    message = blobs_pb2.GetBlobRequest(blob_id=request.match_info["blobId"])
    blob = await call(request.app[SERVICES].blobs.GetBlob, message, request)
    is_json = blob.WhichOneof("content") == "json_data"
    if _wants_bytes(request):
        data = dumps_compact(from_value(blob.json_data)).encode() if is_json else blob.raw_data
        filename = blob.filename if blob.HasField("filename") else blob.blob_id
        content_type = (
            blob.content_type if blob.HasField("content_type") else "application/octet-stream"
        )
        return web.Response(
            body=bytes(data),
            headers={
                "Content-Type": content_type,
                "x-blob-type": blob.blob_type,
                "Content-Disposition": content_disposition(filename),
            },
        )
    answer: dict[str, Any] = {
        "data": from_value(blob.json_data) if is_json else None,
        "blobType": blob.blob_type,
        "blobId": blob.blob_id,
    }
    if blob.HasField("filename"):
        answer["filename"] = blob.filename
    if blob.HasField("content_type"):
        answer["contentType"] = blob.content_type
    return json_response(answer)


# -- run events (server-sent events) ------------------------------------------------------------


def sse_event(event: Message) -> dict[str, Any]:
    """StatusEvent → `{sequenceNumber, timestamp, event: {"<Variant>": {...}}}` (§13)."""
    data = message_json(event)
    answer: dict[str, Any] = {}
    variant: dict[str, Any] = {}
    for field in event.DESCRIPTOR.fields:
        if _json_name(field) not in data:
            continue
        if field.containing_oneof is not None and field.containing_oneof.name == "event":
            name = field.message_type.name.removesuffix("Event")
            variant[name] = data[_json_name(field)]
        else:
            answer[_json_name(field)] = data[_json_name(field)]
    answer["event"] = variant
    return answer


def _sse_frame(data: dict[str, Any], event: str | None = None) -> bytes:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {text}\n\n".encode()


async def _next(stream: AsyncIterator[Any]) -> Any:
    return await stream.__anext__()


async def run_events(request: web.Request) -> web.StreamResponse:
    runs = request.app[SERVICES].runs
    method = implemented(runs, "GetRunEvents")
    if method is None:
        raise RestError(
            grpc.StatusCode.UNIMPLEMENTED,
            "GET /runs/{runId}/events is not available on this node yet "
            "(RunsService.GetRunEvents is not implemented)",
        )
    message = _request_message(request, runs_pb2.GetRunEventsRequest(), query=True, body=None)
    context = RestContext(request)
    try:
        stream = method(message, context)
    except NotImplementedError as exc:
        raise context.error_from(exc) from None
    if not hasattr(stream, "__anext__"):
        if inspect.iscoroutine(stream):
            stream.close()
        raise RestError(grpc.StatusCode.INTERNAL, "GetRunEvents is not an async generator")
    response: web.StreamResponse | None = None
    pending: asyncio.Task[Any] = asyncio.create_task(_next(stream))
    try:
        while True:
            wait = SSE_FIRST_EVENT_SECS if response is None else SSE_KEEPALIVE_SECS
            done, _ = await asyncio.wait({pending}, timeout=wait)
            if not done:
                if response is None:
                    response = await _open_sse(request)
                else:
                    await response.write(b": keep-alive\n\n")
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                break
            except Exception as exc:
                if isinstance(exc, NotImplementedError):
                    exc = context.error_from(exc)
                if response is None:
                    raise exc from None
                if not isinstance(exc, RestError):
                    log.exception("event stream of run %s failed", message.run_id)
                    exc = RestError(grpc.StatusCode.INTERNAL, f"event stream failed: {exc}")
                await response.write(_sse_frame(exc.body(), "error"))
                break
            if response is None:
                response = await _open_sse(request)
            await response.write(_sse_frame(sse_event(event)))
            pending = asyncio.create_task(_next(stream))
        if response is None:
            response = await _open_sse(request)
        await response.write_eof()
    except ConnectionResetError:
        log.debug("event stream client of run %s left", message.run_id)
    finally:
        context.cancel()
        if not pending.done():
            pending.cancel()
            await asyncio.wait({pending})
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
    return response if response is not None else web.Response(status=204)


async def _open_sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    return response


# -- the application ----------------------------------------------------------------------------


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "OPTIONS":  # CORS preflight, any path
        headers = dict(_CORS_PREFLIGHT)
        headers["Access-Control-Allow-Headers"] = (
            request.headers.get("Access-Control-Request-Headers") or "*"
        )
        return web.Response(status=200, headers=headers)
    telemetry.adopt_traceparent(request.headers.get("traceparent"))
    try:
        return await handler(request)
    except RestError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = GRPC_CODE.get(exc.status, grpc.StatusCode.UNKNOWN)
        message = exc.text or exc.reason
        if exc.status == 404:
            message = f"no route {request.method} {request.path}"
        elif exc.status == 405:
            message = f"{request.method} is not supported on {request.path}"
        elif exc.status == 413:
            message = f"the request body exceeds the limit of {MAX_BODY_BYTES} bytes"
        response = json_response({"code": code.value[0], "message": message}, exc.status)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception as exc:  # the node keeps serving
        log.exception("%s %s failed", request.method, request.path)
        return error_response(RestError(grpc.StatusCode.INTERNAL, f"internal error: {exc}"))


async def _cors(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Access-Control-Allow-Origin", "*")
    response.headers.setdefault("Access-Control-Expose-Headers", "*")


def create_app(services: Services) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY_BYTES)
    app[SERVICES] = services
    app.on_response_prepare.append(_cors)
    p = API_PREFIX
    routes = [
        web.get(f"{p}/health", unary("health", "HealthCheck", health_pb2.HealthCheckRequest)),
        web.post(f"{p}/flows", unary("flows", "StoreFlow", flows_pb2.StoreFlowRequest, body=True)),
        web.get(f"{p}/flows/{{flowId}}", unary("flows", "GetFlow", flows_pb2.GetFlowRequest)),
        web.delete(
            f"{p}/flows/{{flowId}}", unary("flows", "DeleteFlow", flows_pb2.DeleteFlowRequest)
        ),
        web.get(
            f"{p}/flows/{{flowId}}/variables",
            unary("flows", "GetFlowVariables", flows_pb2.GetFlowVariablesRequest),
        ),
        web.post(f"{p}/runs", unary("runs", "CreateRun", runs_pb2.CreateRunRequest, body=True)),
        web.get(f"{p}/runs", unary("runs", "ListRuns", runs_pb2.ListRunsRequest, query=True)),
        web.get(f"{p}/runs/{{runId}}", unary("runs", "GetRun", runs_pb2.GetRunRequest, query=True)),
        web.delete(f"{p}/runs/{{runId}}", unary("runs", "DeleteRun", runs_pb2.DeleteRunRequest)),
        web.get(
            f"{p}/runs/{{runId}}/items",
            unary("runs", "GetRunItems", runs_pb2.GetRunItemsRequest, query=True),
        ),
        web.get(
            f"{p}/runs/{{runId}}/flow", unary("runs", "GetRunFlow", runs_pb2.GetRunFlowRequest)
        ),
        web.get(
            f"{p}/runs/{{runId}}/steps",
            unary("runs", "GetRunSteps", runs_pb2.GetRunStepsRequest, query=True),
        ),
        web.get(
            f"{p}/runs/{{runId}}/steps/{{stepId}}",
            unary("runs", "GetStepDetail", runs_pb2.GetStepDetailRequest, query=True),
        ),
        web.post(
            f"{p}/runs/{{runId}}/cancel", unary("runs", "CancelRun", runs_pb2.CancelRunRequest)
        ),
        web.get(f"{p}/runs/{{runId}}/events", run_events),
        web.get(
            f"{p}/components",
            unary(
                "components",
                "ListRegisteredComponents",
                components_pb2.ListRegisteredComponentsRequest,
                query=True,
            ),
        ),
        web.post(f"{p}/blobs", put_blob),
        web.get(f"{p}/blobs/{{blobId}}", get_blob),
    ]
    app.add_routes(routes)
    return app


class RestServer:
    """The node's HTTP port: start after the node, stop before it."""

    def __init__(self, services: Services, host: str, port: int) -> None:
        self.services = services
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @classmethod
    def for_node(cls, node: Node, host: str, port: int) -> RestServer:
        return cls(Services.for_node(node), host, port)

    async def start(self) -> None:
        runner = web.AppRunner(
            create_app(self.services), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_SECS
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.debug("REST API on port %d (%s)", self.port, API_PREFIX)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
