"""One gRPC channel per peer node address, shared by forwarding, relays and cancels."""

from __future__ import annotations

import grpc

from ..runtime import telemetry
from ..runtime.worker_api.endpoint import SERVER_OPTIONS
from .etcd_client import RECONNECT_OPTIONS


class PeerChannels:
    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def get(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(
                address,
                options=[*SERVER_OPTIONS, *RECONNECT_OPTIONS],  # a restarted peer: back in 1 s
                interceptors=telemetry.aio_client_interceptors(),
            )
            self._channels[address] = channel
        return channel

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()
