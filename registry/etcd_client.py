"""Our small, typed async interface to etcd v3: the only module that imports `aetcd`.

We use aetcd's generated etcd v3 gRPC stubs (`aetcd.rpc`) directly rather than its high-level
`Client`: that client drops the response header revision (needed for optimistic concurrency and
for watching "from just after this read"), builds only insecure channels and needs untyped
transaction builders. Everything above this module sees plain dataclasses and two errors:
`EtcdUnavailable` (no endpoint answered; the message names them) and `EtcdError` (etcd refused).

On unavailability the client drops its channel and rotates to the next endpoint, so the next call
reconnects at once (gRPC's own reconnect backoff would otherwise delay recovery by seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import aetcd.rpc as rpc  # type: ignore[import-untyped]
import grpc
import grpc.aio

T = TypeVar("T")

_MAX_MESSAGE = 256 * 1024 * 1024  # responses (tree loads, prefix reads) may be large


# gRPC's default reconnect backoff grows to 120 s and is shared by every channel to the same
# target (global subchannel pool): after an etcd restart a node would stay cut off for minutes.
# Own subchannels and a 1 s ceiling make a restarted etcd usable again within a second.
RECONNECT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class EtcdError(Exception):
    """etcd refused a request or cannot be used as configured."""


class EtcdUnavailable(EtcdError):
    """No etcd endpoint answered (connection refused, timeout, endpoint down)."""


class EtcdLeaseNotFound(EtcdError):
    """The etcd lease expired or was revoked."""


class EtcdCompacted(EtcdError):
    """A watch asked for a revision etcd has already compacted."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"etcd revision compacted up to {compact_revision}")
        self.compact_revision = compact_revision


@dataclass
class EtcdSettings:
    """`cluster.etcd` (durability.md §8)."""

    endpoints: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2379"])
    prefix: str = "/stepflow"
    username: str | None = None
    password: str | None = None
    # {caFile, certFile, keyFile} (snake_case accepted); https:// endpoints imply TLS too.
    tls: dict[str, Any] | None = None
    request_timeout_secs: float = 5.0

    def describe(self) -> str:
        return ", ".join(self.endpoints)


# -- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class RangeResult:
    kvs: list[KeyValue]
    count: int
    revision: int  # the store revision the read saw
    more: bool = False  # a `limit` left keys of the range unread
    cluster_id: int = 0  # the etcd cluster that answered (0 inside a transaction)


@dataclass(frozen=True)
class WatchEvent:
    kind: Literal["PUT", "DELETE"]
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int  # for DELETE: the revision of the deletion
    prev_value: bytes = b""  # the value before the event (watches opened with prev_kv)


# -- transactions: a tiny vocabulary of our own -----------------------------------------------

CompareTarget = Literal["create", "mod", "version", "value"]
CompareOp = Literal["==", "!=", "<", ">"]


@dataclass(frozen=True)
class Compare:
    key: bytes
    target: CompareTarget
    op: CompareOp
    operand: int | bytes

    @staticmethod
    def created(key: bytes, revision: int) -> Compare:
        """create_revision == revision (0 means: the key does not exist)."""
        return Compare(key, "create", "==", revision)

    @staticmethod
    def modified(key: bytes, revision: int) -> Compare:
        """mod_revision == revision (0 means: the key does not exist)."""
        return Compare(key, "mod", "==", revision)


@dataclass(frozen=True)
class Put:
    key: bytes
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    """Delete `key`, or the range [key, range_end)."""

    key: bytes
    range_end: bytes | None = None

    @staticmethod
    def prefix(prefix: bytes) -> Delete:
        return Delete(prefix, prefix_end(prefix))


@dataclass(frozen=True)
class Get:
    key: bytes
    range_end: bytes | None = None
    count_only: bool = False
    limit: int = 0  # at most this many keys (0: all)
    revision: int = 0  # read the keyspace as of this revision (0: the latest)

    @staticmethod
    def prefix(prefix: bytes, *, count_only: bool = False) -> Get:
        return Get(prefix, prefix_end(prefix), count_only)


Op = Put | Delete | Get
OpResult = RangeResult | int | None  # Get → RangeResult, Delete → count, Put → None


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    results: list[OpResult]


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers exactly the keys starting with `prefix`."""
    data = bytearray(prefix)
    for i in reversed(range(len(data))):
        if data[i] < 0xFF:
            data[i] += 1
            return bytes(data[: i + 1])
    return b"\0"


_TARGETS = {"create": "CREATE", "mod": "MOD", "version": "VERSION", "value": "VALUE"}
_OPS = {"==": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}


def _compare_message(c: Compare) -> Any:
    message = rpc.Compare(key=c.key)
    message.result = getattr(rpc.Compare, _OPS[c.op])
    message.target = getattr(rpc.Compare, _TARGETS[c.target])
    if c.target == "value":
        message.value = c.operand if isinstance(c.operand, bytes) else str(c.operand).encode()
    elif c.target == "create":
        message.create_revision = int(c.operand)
    elif c.target == "mod":
        message.mod_revision = int(c.operand)
    else:
        message.version = int(c.operand)
    return message


def _range_request(op: Get) -> Any:
    request = rpc.RangeRequest(
        key=op.key, count_only=op.count_only, limit=op.limit, revision=op.revision
    )
    if op.range_end is not None:
        request.range_end = op.range_end
    return request


def _op_message(op: Op) -> Any:
    if isinstance(op, Put):
        return rpc.RequestOp(request_put=rpc.PutRequest(key=op.key, value=op.value, lease=op.lease))
    if isinstance(op, Delete):
        request = rpc.DeleteRangeRequest(key=op.key)
        if op.range_end is not None:
            request.range_end = op.range_end
        return rpc.RequestOp(request_delete_range=request)
    return rpc.RequestOp(request_range=_range_request(op))


def _kv(message: Any) -> KeyValue:
    return KeyValue(
        bytes(message.key),
        bytes(message.value),
        int(message.create_revision),
        int(message.mod_revision),
        int(message.version),
        int(message.lease),
    )


def _range_result(response: Any, revision: int) -> RangeResult:
    return RangeResult(
        [_kv(kv) for kv in response.kvs],
        int(response.count),
        revision,
        bool(response.more),
        int(response.header.cluster_id),
    )


# -- the client -------------------------------------------------------------------------------


@dataclass
class _Stubs:
    channel: grpc.aio.Channel
    kv: Any
    lease: Any
    watch: Any
    generation: int


def _target(endpoint: str) -> tuple[str, bool]:
    """'http://h:p' / 'https://h:p' / 'h:p' → ('h:p', tls implied by the scheme)."""
    text = endpoint.strip()
    secure = text.startswith("https://")
    for scheme in ("http://", "https://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    return text.rstrip("/"), secure


class EtcdClient:
    """One gRPC channel to one endpoint at a time; safe to share between tasks."""

    def __init__(self, settings: EtcdSettings) -> None:
        if not settings.endpoints:
            raise EtcdError("cluster.etcd.endpoints: at least one endpoint is required")
        if (settings.username is None) != (settings.password is None):
            raise EtcdError("cluster.etcd: username and password must be given together")
        self.settings = settings
        self._index = 0
        self._generation = 0
        self._stubs: _Stubs | None = None
        self._token: str | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def timeout(self) -> float:
        return self.settings.request_timeout_secs

    def describe(self) -> str:
        return self.settings.describe()

    # -- connection --------------------------------------------------------------------------

    def _credentials(self, implied: bool) -> grpc.ChannelCredentials | None:
        tls = self.settings.tls
        if tls is None and not implied:
            return None
        tls = tls or {}

        def read(*names: str) -> bytes | None:
            for name in names:
                path = tls.get(name)
                if path:
                    try:
                        return Path(str(path)).read_bytes()
                    except OSError as exc:
                        message = f"cluster.etcd.tls.{name}: cannot read {path}: {exc}"
                        raise EtcdError(message) from exc
            return None

        return grpc.ssl_channel_credentials(
            root_certificates=read("caFile", "ca_file", "ca"),
            private_key=read("keyFile", "key_file", "key"),
            certificate_chain=read("certFile", "cert_file", "cert"),
        )

    async def connect(self) -> None:
        """Open the channel (lazily done by every call); authenticates when configured."""
        await self._ensure()

    async def _ensure(self) -> _Stubs:
        if self._stubs is not None:
            return self._stubs
        if self._closed:
            raise EtcdError("etcd client is closed")
        async with self._lock:
            if self._stubs is not None:
                return self._stubs
            target, implied = _target(self.settings.endpoints[self._index])
            options = [
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.max_send_message_length", _MAX_MESSAGE),
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.keepalive_timeout_ms", 5_000),
                *RECONNECT_OPTIONS,
            ]
            credentials = self._credentials(implied)
            channel = (
                grpc.aio.secure_channel(target, credentials, options=options)
                if credentials is not None
                else grpc.aio.insecure_channel(target, options=options)
            )
            self._generation += 1
            stubs = _Stubs(
                channel,
                rpc.KVStub(channel),
                rpc.LeaseStub(channel),
                rpc.WatchStub(channel),
                self._generation,
            )
            if self.settings.username is not None:
                try:
                    auth = rpc.AuthStub(channel)
                    response = await auth.Authenticate(
                        rpc.AuthenticateRequest(
                            name=self.settings.username, password=self.settings.password
                        ),
                        timeout=self.timeout,
                    )
                except grpc.aio.AioRpcError as exc:
                    await channel.close()
                    raise self._error(exc, stubs) from exc
                self._token = str(response.token)
            self._stubs = stubs
            return stubs

    async def close(self) -> None:
        self._closed = True
        stubs, self._stubs = self._stubs, None
        if stubs is not None:
            await stubs.channel.close()

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        return (("token", self._token),) if self._token else None

    def _rotate(self, stubs: _Stubs) -> None:
        """Drop the failed channel (once per generation) and move to the next endpoint."""
        if self._stubs is not None and self._stubs.generation == stubs.generation:
            self._stubs = None
            self._index = (self._index + 1) % len(self.settings.endpoints)
            channel = stubs.channel
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(channel.close())

    def _error(self, exc: grpc.aio.AioRpcError, stubs: _Stubs) -> EtcdError:
        code, details = exc.code(), exc.details() or ""
        if code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.CANCELLED,
        ):
            self._rotate(stubs)
            return EtcdUnavailable(
                f"etcd unavailable at {self.describe()} ({code.name.lower()}: {details})"
            )
        if "lease not found" in details:
            return EtcdLeaseNotFound(details)
        if "too many operations in txn" in details:
            details += " (raise etcd's --max-txn-ops or the store's max_txn_ops setting)"
        elif "request is too large" in details:
            details += " (raise etcd's --max-request-bytes or lower the store's max_txn_bytes)"
        elif code == grpc.StatusCode.UNAUTHENTICATED or "auth token" in details:
            self._token = None
            self._rotate(stubs)  # re-authenticate on the next call
        return EtcdError(f"etcd at {self.describe()}: {code.name.lower()}: {details}")

    async def _call(self, fn: Callable[[_Stubs], Awaitable[T]]) -> T:
        stubs = await self._ensure()
        try:
            return await fn(stubs)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, stubs) from exc
        except asyncio.CancelledError:
            raise self._interrupted() from None

    def _interrupted(self) -> BaseException:
        """A call cancelled under us: its channel was closed by a rotation after another failure.

        grpc.aio reports that as CancelledError; unless our own task is being cancelled, it is
        an unavailability like any other (retried by the callers that retry).
        """
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            return asyncio.CancelledError()
        return EtcdUnavailable(f"etcd at {self.describe()}: call interrupted by a reconnect")

    # -- KV ----------------------------------------------------------------------------------

    async def range(self, get: Get) -> RangeResult:
        async def call(s: _Stubs) -> RangeResult:
            response = await s.kv.Range(
                _range_request(get), timeout=self.timeout, metadata=self._metadata()
            )
            return _range_result(response, int(response.header.revision))

        return await self._call(call)

    async def get(self, key: bytes) -> KeyValue | None:
        result = await self.range(Get(key))
        return result.kvs[0] if result.kvs else None

    async def get_prefix(self, prefix: bytes) -> list[KeyValue]:
        return (await self.range(Get.prefix(prefix))).kvs

    async def put(self, key: bytes, value: bytes, lease: int | None = None) -> int:
        """Returns the revision of the write."""

        async def call(s: _Stubs) -> int:
            response = await s.kv.Put(
                rpc.PutRequest(key=key, value=value, lease=lease or 0),
                timeout=self.timeout,
                metadata=self._metadata(),
            )
            return int(response.header.revision)

        return await self._call(call)

    async def delete(self, key: bytes) -> int:
        return await self._delete(Delete(key))

    async def delete_prefix(self, prefix: bytes) -> int:
        return await self._delete(Delete.prefix(prefix))

    async def _delete(self, op: Delete) -> int:
        result = await self.txn([], [op])
        deleted = result.results[0]
        return deleted if isinstance(deleted, int) else 0

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        request = rpc.TxnRequest(
            compare=[_compare_message(c) for c in compares],
            success=[_op_message(o) for o in success],
            failure=[_op_message(o) for o in failure],
        )

        async def call(s: _Stubs) -> TxnResult:
            response = await s.kv.Txn(request, timeout=self.timeout, metadata=self._metadata())
            revision = int(response.header.revision)
            results: list[OpResult] = []
            for item in response.responses:
                kind = item.WhichOneof("response")
                if kind == "response_range":
                    results.append(_range_result(item.response_range, revision))
                elif kind == "response_delete_range":
                    results.append(int(item.response_delete_range.deleted))
                else:
                    results.append(None)
            return TxnResult(bool(response.succeeded), revision, results)

        return await self._call(call)

    # -- leases ------------------------------------------------------------------------------

    async def lease_grant(self, ttl_secs: int) -> tuple[int, int]:
        """A new lease → (id, granted TTL)."""

        async def call(s: _Stubs) -> tuple[int, int]:
            response = await s.lease.LeaseGrant(
                rpc.LeaseGrantRequest(TTL=ttl_secs), timeout=self.timeout, metadata=self._metadata()
            )
            if response.error:
                raise EtcdError(f"etcd at {self.describe()}: lease grant: {response.error}")
            return int(response.ID), int(response.TTL)

        return await self._call(call)

    async def lease_keepalive(self, lease_id: int) -> int:
        """Refresh once; returns the new TTL, 0 when the lease no longer exists."""

        async def call(s: _Stubs) -> int:
            stream = s.lease.LeaseKeepAlive(
                iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]),
                timeout=self.timeout,
                metadata=self._metadata(),
            )
            async for reply in stream:
                return int(reply.TTL)
            return 0

        return await self._call(call)

    async def lease_revoke(self, lease_id: int) -> None:
        async def call(s: _Stubs) -> None:
            await s.lease.LeaseRevoke(
                rpc.LeaseRevokeRequest(ID=lease_id), timeout=self.timeout, metadata=self._metadata()
            )

        await self._call(call)

    async def lease_time_to_live(self, lease_id: int) -> int:
        """Remaining seconds; -1 when the lease no longer exists."""

        async def call(s: _Stubs) -> int:
            response = await s.lease.LeaseTimeToLive(
                rpc.LeaseTimeToLiveRequest(ID=lease_id),
                timeout=self.timeout,
                metadata=self._metadata(),
            )
            return int(response.TTL)

        return await self._call(call)

    # -- watches -----------------------------------------------------------------------------

    async def watch_prefix(
        self, prefix: bytes, start_revision: int | None = None
    ) -> AsyncGenerator[WatchEvent, None]:
        async for event in self.watch(prefix, prefix_end(prefix), start_revision):
            yield event

    async def watch(
        self,
        key: bytes,
        range_end: bytes | None = None,
        start_revision: int | None = None,
        *,
        prev_kv: bool = False,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Events for `key` (or [key, range_end)) until the consumer stops or the stream fails.

        Stop by breaking out / closing the iterator (use `contextlib.aclosing`) or by cancelling
        the consuming task; the server-side watch ends with the stream.
        """
        stubs = await self._ensure()
        create = rpc.WatchCreateRequest(
            key=key, start_revision=start_revision or 0, prev_kv=prev_kv
        )
        if range_end is not None:
            create.range_end = range_end
        stop = asyncio.Event()

        async def requests() -> AsyncIterator[Any]:
            yield rpc.WatchRequest(create_request=create)
            await stop.wait()

        call = stubs.watch.Watch(requests(), metadata=self._metadata())
        try:
            async for response in call:
                if response.compact_revision:
                    raise EtcdCompacted(int(response.compact_revision))
                if response.canceled:
                    raise EtcdError(
                        f"etcd at {self.describe()} cancelled a watch: {response.cancel_reason}"
                    )
                for event in response.events:
                    kv = event.kv
                    yield WatchEvent(
                        "DELETE" if event.type == rpc.Event.DELETE else "PUT",
                        bytes(kv.key),
                        bytes(kv.value),
                        int(kv.create_revision),
                        int(kv.mod_revision),
                        bytes(event.prev_kv.value) if event.HasField("prev_kv") else b"",
                    )
            raise EtcdUnavailable(f"etcd watch stream at {self.describe()} ended")
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, stubs) from exc
        except asyncio.CancelledError:
            raise self._interrupted() from None
        finally:
            stop.set()
            call.cancel()
