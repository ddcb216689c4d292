"""REGISTER rates at the relay (sans-I/O RelayCore with real RelayClients, unix time in `now`).

    agent A, introduced to 40 peers at once, one source address:
        40 x REGISTER(no cookie) --> 40 CHALLENGE --> 40 x REGISTER(cookie) --> 40 REGISTERED
        (the peers register their side from their own addresses; every pair then forwards)
    a flood of REGISTERs with junk tickets from thousands of spoofed sources: silence, no state,
        and nobody's bucket spent (a real system registers right after it)
    a captured valid ticket replayed from thousands of spoofed sources: at most the burst of
        that system's bucket answered, each answer a CHALLENGE smaller than the request to the
        claimed source, never a registration; other systems unaffected
"""

from __future__ import annotations

from enclave.agent.relay_client import RelayClient
from enclave.platform.relay import (
    REGISTER_BURST_PER_SYSTEM,
    REGISTER_RATE_PER_SYSTEM,
    RelayCore,
)
from enclave.proto.wire import MSG_RELAY_CHALLENGE, MSG_RELAY_REGISTER, pack_relay_header
from tests.support.relay import KEY, NOW, RELAY, ticket

Addr = tuple[str, int]
A_ADDR: Addr = ("198.18.1.1", 40000)
PEERS = 40
STEP = 0.05  # seconds of virtual time per round of the drive loop


def _peer_addr(i: int) -> Addr:
    return (f"198.18.{2 + i // 200}.{1 + i % 200}", 41000 + i)


def _spoofed(i: int) -> Addr:
    return (f"198.19.{i // 250}.{1 + i % 250}", 1024 + i)


class Mesh:
    """RelayCore and clients keyed by their address; `run` moves datagrams and time."""

    def __init__(self) -> None:
        self.core = RelayCore(KEY, cookie_secret=b"c" * 32)
        self.now = NOW
        self.clients: dict[Addr, RelayClient] = {}
        self.registered: dict[Addr, set[str]] = {}

    def client(self, addr: Addr) -> RelayClient:
        self.registered.setdefault(addr, set())
        return self.clients.setdefault(addr, RelayClient())

    def to_relay(self, out: list[tuple[bytes, Addr]], src: Addr) -> None:
        for data, dst in out:
            assert dst == RELAY
            for reply, to in self.core.receive(data, src, self.now):
                assert len(reply) <= len(data)
                r = self.clients[to].receive(reply, RELAY, self.now)
                assert r is not None
                if r.kind == "registered":
                    self.registered[to].add(r.peer)
                elif r.kind == "send":
                    self.to_relay(r.send, to)

    def run(self, seconds: float) -> None:
        """Advance time in STEPs, sending every client's due REGISTERs (retries, refreshes)."""
        end = self.now + seconds
        while self.now < end:
            self.now += STEP
            for addr, rc in self.clients.items():
                self.to_relay(rc.due(self.now), addr)


def _name(i: int) -> str:
    return f"PEER{i:03d}"


def test_an_agent_introduced_to_40_peers_at_once_registers_every_channel() -> None:
    m = Mesh()
    a = m.client(A_ADDR)
    for i in range(PEERS):  # the introductions arrive together: one REGISTER each at once
        m.to_relay(a.add(_name(i), RELAY, ticket("AGENTA", _name(i)), m.now), A_ADDR)
        peer = m.client(_peer_addr(i))
        m.to_relay(peer.add("AGENTA", RELAY, ticket(_name(i), "AGENTA"), m.now), _peer_addr(i))
    m.run(15.0)  # the client's retries: RETRY_LIMIT x RETRY_INTERVAL = 10 s
    assert m.registered[A_ADDR] == {_name(i) for i in range(PEERS)}
    assert all(m.registered[_peer_addr(i)] == {"AGENTA"} for i in range(PEERS))
    assert len(m.core) == 2 * PEERS
    for i in range(PEERS):  # and every pair forwards
        path = a.path_for(_name(i))
        assert path is not None
        wrapped = a.wrap(b"to %d" % i, path)
        assert wrapped is not None
        out = m.core.receive(wrapped[0], A_ADDR, m.now)
        assert len(out) == 1 and out[0][1] == _peer_addr(i)
        got = m.clients[_peer_addr(i)].receive(out[0][0], RELAY, m.now)
        assert got is not None and got.kind == "data" and got.message == b"to %d" % i


def test_a_junk_flood_from_spoofed_sources_gets_silence_and_spends_no_bucket() -> None:
    m = Mesh()
    junk = ticket("AGENTA", "PEER000", key=b"\x01" * 32)  # not minted with the relay's key
    for i in range(5000):
        req = pack_relay_header(MSG_RELAY_REGISTER, 1 + i % 65535) + bytes(16) + junk
        assert m.core.receive(req, _spoofed(i), m.now) == []
    assert len(m.core) == 0
    # at the same instant, a real pair still registers (the flood spent no bucket of theirs)
    x, y = m.client(A_ADDR), m.client(_peer_addr(0))
    m.to_relay(x.add(_name(0), RELAY, ticket("AGENTA", _name(0)), m.now), A_ADDR)
    m.to_relay(y.add("AGENTA", RELAY, ticket(_name(0), "AGENTA"), m.now), _peer_addr(0))
    assert m.registered[A_ADDR] == {_name(0)} and m.registered[_peer_addr(0)] == {"AGENTA"}


def test_a_captured_ticket_replayed_from_spoofed_sources_is_bounded_by_its_system() -> None:
    m = Mesh()
    captured = ticket("AGENTA", "PEER000")
    answered = 0
    for i in range(5000):
        req = pack_relay_header(MSG_RELAY_REGISTER, 7) + bytes(16) + captured
        out = m.core.receive(req, _spoofed(i), m.now)
        for reply, to in out:
            assert reply[0] == MSG_RELAY_CHALLENGE and to == _spoofed(i)
            assert len(reply) < len(req)
        answered += len(out)
    assert 0 < answered <= REGISTER_BURST_PER_SYSTEM
    assert len(m.core) == 0  # no cookie came back from any of them: nothing registered
    # a second later: at most that second's refill
    m.now += 1.0
    again = sum(len(m.core.receive(pack_relay_header(MSG_RELAY_REGISTER, 7) + bytes(16)
                                   + captured, _spoofed(i), m.now)) for i in range(1000))
    assert again <= REGISTER_RATE_PER_SYSTEM + 1
    # another system is not affected
    y = m.client(_peer_addr(1))
    m.to_relay(y.add("AGENTA", RELAY, ticket(_name(1), "AGENTA"), m.now), _peer_addr(1))
    assert m.registered[_peer_addr(1)] == {"AGENTA"}
