"""The channel table both relay clients keep (enclave.agent.relay_client for the UDP relay,
enclave.agent.relay_tls for the relay over TLS).

A channel is this agent's own label for one relayed peer: drawn at random from
1..RELAY_MAX_CHANNEL (never one in use), so a third party cannot guess the channel of a live
registration from how many came before. The table finds a channel by peer and by number.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from enclave.proto.wire import RELAY_MAX_CHANNEL


class Channel(Protocol):
    """What the table needs of a client's channel record."""

    @property
    def peer(self) -> str: ...

    @property
    def channel(self) -> int: ...

    @property
    def registered(self) -> bool: ...


C = TypeVar("C", bound=Channel)


class ChannelTable(Generic[C]):
    def __init__(self) -> None:
        self.by_peer: dict[str, C] = {}
        self.by_channel: dict[int, C] = {}

    def new(self, make: Callable[[int], C]) -> C:
        """A channel for a peer, made by make(number) with a fresh random number (RuntimeError
        when every number is in use)."""
        if len(self.by_channel) >= RELAY_MAX_CHANNEL:
            raise RuntimeError("no free relay channel")
        while True:
            number = secrets.randbelow(RELAY_MAX_CHANNEL) + 1
            if number not in self.by_channel:
                break
        ch = make(number)
        self.by_peer[ch.peer] = ch
        self.by_channel[ch.channel] = ch
        return ch

    def remove(self, peer: str) -> None:
        ch = self.by_peer.pop(peer, None)
        if ch is not None:
            self.by_channel.pop(ch.channel, None)

    def registered(self, peer: str) -> bool:
        ch = self.by_peer.get(peer)
        return ch is not None and ch.registered

    def clear(self) -> None:
        self.by_peer.clear()
        self.by_channel.clear()
