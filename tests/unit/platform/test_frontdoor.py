"""The front door's connection caps (enclave.platform.frontdoor): the counting core as numbered
cases, and the guarded listener with real sockets on loopback (the TCP reflector's bound)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from enclave.platform.discovery import (
    TCP_MAX_PER_ADDRESS,
    DiscoveryService,
    Reflector,
)
from enclave.platform.frontdoor import ConnectionLimits, source_key
from tests.support.proc import free_port

# (case, source keys in order) -> expected refusal reasons (None: admitted)
LIMIT_CASES = [
    (1, ["a", "a", "a"], [None, None, "unauthenticated connections from one address"]),
    (2, ["a", "b", "c", "d"], [None, None, None, "unauthenticated connections"]),
    (3, ["a", "b", "c", "d", "e"], [None, None, None, "unauthenticated connections",
                                    "unauthenticated connections"]),
]


@pytest.mark.parametrize(("case", "hosts", "expected"), LIMIT_CASES)
def test_admission_caps(case: int, hosts: list[str], expected: list[str | None]) -> None:
    limits = ConnectionLimits(max_total=10, max_unauth=3, max_per_address=2)
    got = [limits.admit(fd, host) for fd, host in enumerate(hosts)]
    assert got == expected, case
    assert limits.total == expected.count(None)


def test_authenticated_connections_leave_the_unauthenticated_caps() -> None:
    limits = ConnectionLimits(max_total=4, max_unauth=2, max_per_address=1)
    assert limits.admit(1, "10.0.0.1") is None
    assert limits.admit(2, "10.0.0.1") is not None  # one per address
    assert limits.authenticated(1) and not limits.authenticated(1)
    assert limits.is_authenticated(1)
    assert limits.admit(3, "10.0.0.1") is None  # the agent no longer counts for its NAT
    assert limits.admit(4, "10.0.0.2") is None
    assert limits.admit(5, "10.0.0.3") == "unauthenticated connections"
    limits.authenticated(3)
    limits.authenticated(4)
    assert limits.admit(6, "10.0.0.3") is None
    assert limits.admit(7, "10.0.0.4") == "connections"  # 4 in total
    for fd in (1, 3, 4, 6):
        limits.release(fd)
    limits.release(99)  # unknown: harmless
    assert limits.total == 0 and not limits.per_address
    assert limits.refused == {"unauthenticated connections from one address": 1,
                              "unauthenticated connections": 1, "connections": 1}


@pytest.mark.parametrize(("host", "key"), [
    ("198.18.0.1", "198.18.0.1"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),  # the same /64: one key
    ("::ffff:198.18.0.9", "198.18.0.9"),
    ("fe80::1%eth0", "fe80::/64"),
    ("not-an-ip", "not-an-ip"),
])
def test_source_keys(host: str, key: str) -> None:
    assert source_key(host) == key


def test_tcp_reflector_holds_only_its_share_per_address() -> None:
    """Strangers that connect to the TCP reflector and send nothing: at most
    TCP_MAX_PER_ADDRESS from one address are held (until TCP_READ_TIMEOUT), the rest closed at
    once; another address still gets in."""
    async def main() -> None:
        port = free_port()
        service = DiscoveryService(Reflector(lambda name: None), "127.0.0.1", (free_port(), port),
                                   alt_address="")
        await service.start()
        socks: list[socket.socket] = []
        try:
            for _ in range(TCP_MAX_PER_ADDRESS + 6):
                s = socket.socket()
                s.bind(("127.0.0.2", 0))
                s.connect(("127.0.0.1", port))
                s.setblocking(False)
                socks.append(s)
            for _ in range(100):  # let the server accept them all
                await asyncio.sleep(0.01)
                if sum(service.tcp_limits.refused.values()) >= 6:
                    break
            assert service.tcp_limits.total == TCP_MAX_PER_ADDRESS
            assert service.tcp_limits.refused == {
                "unauthenticated connections from one address": 6}
            other = socket.create_connection(("127.0.0.1", port))
            socks.append(other)
            for _ in range(100):
                await asyncio.sleep(0.01)
                if service.tcp_limits.total == TCP_MAX_PER_ADDRESS + 1:
                    break
            assert service.tcp_limits.total == TCP_MAX_PER_ADDRESS + 1
        finally:
            for s in socks:
                s.close()
            await service.stop()

    asyncio.run(main())
