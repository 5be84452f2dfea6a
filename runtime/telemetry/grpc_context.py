"""W3C `traceparent` over gRPC: honoured on incoming RPCs, attached to outgoing ones.

The server interceptor puts an incoming traceparent into the RPC task's context (context.py), so a
run created by that RPC joins the caller's trace. Client interceptors add the current stepflow
span's traceparent (or the incoming one) to calls the runtime makes.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from .context import current_span, format_traceparent, incoming_traceparent, parse_traceparent

HEADER = "traceparent"


def outgoing_traceparent() -> str | None:
    span = current_span.get()
    if span is not None:
        context = span.get_span_context()
        if context.is_valid:
            return format_traceparent(context.trace_id, context.span_id, int(context.trace_flags))
    return incoming_traceparent.get()


def _traceparent_of(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == HEADER and isinstance(value, str) and parse_traceparent(value) is not None:
            return value.strip().lower()
    return None


class TraceparentServerInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        traceparent = _traceparent_of(handler_call_details.invocation_metadata)
        if handler is None or traceparent is None:
            return handler
        wrapped: grpc.RpcMethodHandler[Any, Any] = _with_traceparent(handler, traceparent)
        return wrapped


def _with_traceparent(handler: Any, traceparent: str) -> Any:
    """The same handler, with `traceparent` current while its behaviour runs."""

    if handler.unary_unary is not None or handler.stream_unary is not None:
        inner = handler.unary_unary or handler.stream_unary

        async def unary(request: Any, context: Any) -> Any:
            previous = incoming_traceparent.get()
            incoming_traceparent.set(traceparent)
            try:
                return await inner(request, context)
            finally:
                incoming_traceparent.set(previous)

        make = (
            grpc.unary_unary_rpc_method_handler
            if handler.unary_unary is not None
            else grpc.stream_unary_rpc_method_handler
        )
        return make(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    inner_stream = handler.unary_stream or handler.stream_stream
    make_stream = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream is not None
        else grpc.stream_stream_rpc_method_handler
    )
    if not inspect.isasyncgenfunction(inner_stream):  # writes with context.write()

        async def writing(request: Any, context: Any) -> Any:
            previous = incoming_traceparent.get()
            incoming_traceparent.set(traceparent)
            try:
                return await inner_stream(request, context)
            finally:
                incoming_traceparent.set(previous)

        return make_stream(
            writing,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
        previous = incoming_traceparent.get()
        incoming_traceparent.set(traceparent)
        try:
            async for message in inner_stream(request, context):
                yield message
        finally:
            incoming_traceparent.set(previous)

    return make_stream(
        streaming,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _aio_details(details: Any) -> Any:
    traceparent = outgoing_traceparent()
    if traceparent is None:
        return details
    pairs = [(k, v) for k, v in (details.metadata or ()) if k != HEADER]
    return details._replace(metadata=grpc.aio.Metadata(*pairs, (HEADER, traceparent)))


class _AioUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_aio_details(client_call_details), request)


class _AioUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_aio_details(client_call_details), request)


class _AioStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(_aio_details(client_call_details), request_iterator)


class _AioStreamStream(grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(_aio_details(client_call_details), request_iterator)


def aio_client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    return [_AioUnaryUnary(), _AioUnaryStream(), _AioStreamUnary(), _AioStreamStream()]


class _SyncDetails(grpc.ClientCallDetails):
    def __init__(self, base: Any, metadata: list[tuple[str, str]]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = tuple(metadata)
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


def _sync_details(details: Any) -> Any:
    traceparent = outgoing_traceparent()
    if traceparent is None:
        return details
    pairs = [(k, v) for k, v in (details.metadata or ()) if k != HEADER]
    return _SyncDetails(details, [*pairs, (HEADER, traceparent)])


class SyncTraceparentInterceptor(
    grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor
):
    """For blocking channels (the CLI's node client)."""

    def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return continuation(_sync_details(client_call_details), request)

    def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return continuation(_sync_details(client_call_details), request)
