"""The agent's side of the platform relay: one registration (channel) per relayed peer.

    ConnectionManager                     RelayClient                         relay (UDP)
    -----------------                     -----------                         -----------
    UseRelay(peer) --> add(peer, relay, ticket) --> REGISTER(ch, 0, ticket) -->
                                           <-- on CHALLENGE: REGISTER(ch, cookie, ticket) <--
    node.add_candidate(path_for(peer)) <-- on REGISTERED: "peer ready"       <--
    Node sends (msg, PathAddr(RELAY, relay host, ch)) --> wrap() --> DATA(ch, msg) -->
    Node.receive_datagram(msg, PathAddr(RELAY, ..)) <-- receive() <-- DATA(ch, msg) <--
    compiled data plane: route(path) -> (relay address, ch); its loops then send and take the
    session's DATA to and from the relay themselves (enclave/_fp_relaypath.pxi); handshakes,
    CONTROL and registration still come through here

The PathAddr of a relayed peer is PathAddr(Transport.RELAY, <relay host>, <channel>): the channel
is this agent's own label for the peer, so every relayed peer has its own path address.
Channels are drawn at random (enclave.agent.relay_channels, shared with the relay over TLS).  The
relay only ever sees ciphertext; the session's end-to-end authentication is unchanged.
Registrations are refreshed every REFRESH_INTERVAL seconds (which also keeps our NAT mapping
towards the relay open).  Sans-I/O: callers pass `now` and send what comes back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from enclave.agent.relay_channels import ChannelTable
from enclave.discovery.candidates import PathAddr, Transport
from enclave.proto.wire import (
    MSG_RELAY_CHALLENGE,
    MSG_RELAY_DATA,
    MSG_RELAY_REGISTER,
    MSG_RELAY_REGISTERED,
    RELAY_CHALLENGE_SIZE,
    RELAY_COOKIE_SIZE,
    RELAY_HEADER_SIZE,
    RELAY_REGISTERED_SIZE,
    WireError,
    pack_relay_header,
    unpack_relay_header,
)

Addr = tuple[str, int]
REFRESH_INTERVAL = 20.0
RETRY_INTERVAL = 0.5  # REGISTER repeated until answered ...
RETRY_LIMIT = 20  # ... at most this many times in a row


@dataclass
class RelayInput:
    """What a datagram from the relay meant: "data" (a relayed message for `path`),
    "registered" / "refreshed" (the channel works), "send" (answer a challenge with `send`)."""

    kind: str
    peer: str
    path: PathAddr | None = None
    message: bytes = b""
    send: list[tuple[bytes, Addr]] = field(default_factory=list)


@dataclass
class _Channel:
    peer: str
    relay: Addr
    ticket: bytes
    channel: int
    cookie: bytes = bytes(RELAY_COOKIE_SIZE)
    registered: bool = False
    next_send: float = 0.0
    tries: int = 0
    sent_at: float | None = None  # the last REGISTER not yet answered
    rtt: float | None = None  # REGISTER -> CHALLENGE / REGISTERED, the latest measured


class RelayClient:
    def __init__(self) -> None:
        self._channels: ChannelTable[_Channel] = ChannelTable()
        self._by_peer = self._channels.by_peer
        self._by_channel = self._channels.by_channel

    # --- registration ---------------------------------------------------------------------
    def add(self, peer: str, relay: Addr, ticket: bytes, now: float) -> list[tuple[bytes, Addr]]:
        """Start (or restart) registering `peer`'s channel; returns the REGISTER to send."""
        ch = self._by_peer.get(peer)
        if ch is None or ch.relay != relay:
            if ch is not None:
                self.remove(peer)
            ch = self._channels.new(lambda number: _Channel(peer, relay, ticket, number))
        else:
            ch.ticket = ticket
        ch.tries = 0
        return [self._register(ch, now)]

    def set_ticket(self, peer: str, ticket: bytes, now: float) -> list[tuple[bytes, Addr]]:
        """A later ticket for `peer`'s channel; a registered channel re-registers with it now
        (the relay's registration lasts at most until its ticket expires)."""
        ch = self._by_peer.get(peer)
        if ch is None:
            return []
        ch.ticket = ticket
        if not ch.registered:
            return []  # the next REGISTER (retry) carries it
        ch.tries = 0
        return [self._register(ch, now)]

    def remove(self, peer: str) -> None:
        self._channels.remove(peer)

    def path_for(self, peer: str) -> PathAddr | None:
        ch = self._by_peer.get(peer)
        return None if ch is None else PathAddr(Transport.RELAY, ch.relay[0], ch.channel)

    def route(self, path: PathAddr) -> tuple[Addr, int] | None:
        """(the relay's UDP address, our channel) of a relayed path, for the compiled data
        plane (DataPlane.use_relay_routes); None when no channel of ours has that path."""
        ch = self._by_channel.get(path.port)
        if ch is None or path.transport is not Transport.RELAY or ch.relay[0] != path.host:
            return None
        return ch.relay, ch.channel

    def registered(self, peer: str) -> bool:
        return self._channels.registered(peer)

    def rtt(self, peer: str) -> tuple[Addr, float | None] | None:
        """(relay address, latest REGISTER round-trip time in seconds) of `peer`'s channel."""
        ch = self._by_peer.get(peer)
        return None if ch is None else (ch.relay, ch.rtt)

    def is_relay(self, addr: Addr) -> bool:
        return any(ch.relay == addr for ch in self._by_peer.values())

    def _register(self, ch: _Channel, now: float) -> tuple[bytes, Addr]:
        ch.tries += 1
        ch.sent_at = now
        ch.next_send = now + (REFRESH_INTERVAL if ch.registered else RETRY_INTERVAL)
        return pack_relay_header(MSG_RELAY_REGISTER, ch.channel) + ch.cookie + ch.ticket, ch.relay

    # --- timers ---------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        times = [c.next_send for c in self._by_peer.values() if c.tries < RETRY_LIMIT]
        return min(times) if times else None

    def due(self, now: float) -> list[tuple[bytes, Addr]]:
        out = []
        for ch in self._by_peer.values():
            if now >= ch.next_send and ch.tries < RETRY_LIMIT:
                out.append(self._register(ch, now))
        return out

    # --- datagrams ------------------------------------------------------------------------
    def wrap(self, msg: bytes, path: PathAddr) -> tuple[bytes, Addr] | None:
        """A message for a relayed path, framed for the relay (None: no such channel)."""
        ch = self._by_channel.get(path.port)
        if ch is None or ch.relay[0] != path.host:
            return None
        return pack_relay_header(MSG_RELAY_DATA, ch.channel) + msg, ch.relay

    def receive(self, data: bytes, src: Addr, now: float) -> RelayInput | None:
        """Handle a datagram from a relay address; None when dropped (not from our relay,
        unknown channel, malformed)."""
        try:
            kind, channel = unpack_relay_header(data)
        except WireError:
            return None
        ch = self._by_channel.get(channel)
        if ch is None or ch.relay != src:
            return None
        if kind == MSG_RELAY_DATA:
            path = PathAddr(Transport.RELAY, ch.relay[0], ch.channel)
            return RelayInput("data", ch.peer, path, bytes(data[RELAY_HEADER_SIZE:]))
        if kind in (MSG_RELAY_CHALLENGE, MSG_RELAY_REGISTERED) and ch.sent_at is not None:
            ch.rtt, ch.sent_at = max(0.0, now - ch.sent_at), None
        if kind == MSG_RELAY_CHALLENGE and len(data) == RELAY_CHALLENGE_SIZE:
            ch.cookie = bytes(data[RELAY_HEADER_SIZE:])
            ch.tries = 0
            return RelayInput("send", ch.peer, send=[self._register(ch, now)])
        if kind == MSG_RELAY_REGISTERED and len(data) == RELAY_REGISTERED_SIZE:
            lifetime = int.from_bytes(data[RELAY_HEADER_SIZE:], "little")
            first = not ch.registered
            ch.registered = True
            ch.tries = 0
            ch.next_send = now + min(REFRESH_INTERVAL, max(1.0, lifetime / 2))
            return RelayInput("registered" if first else "refreshed", ch.peer)
        return None
