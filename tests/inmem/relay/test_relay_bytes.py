"""RelayCore counts the payload bytes it forwards (enclave_platform_relay_forwarded_bytes_total):
the relay header is not counted, dropped datagrams are not either."""

from __future__ import annotations

from tests.support.relay import X_ADDR, Y_ADDR, Pair


def test_forwarded_bytes_count_payloads_only() -> None:
    p = Pair()
    p.register_both()
    assert p.core.forwarded_bytes == 0  # registration is not forwarding
    p.send(p.x, "Y", b"a" * 100, X_ADDR)
    p.send(p.y, "X", b"b" * 7, Y_ADDR)
    assert [m for _, m in p.got["Y"]] == [b"a" * 100]
    assert p.core.forwarded == 2
    assert p.core.forwarded_bytes == 107


def test_dropped_datagrams_add_no_bytes() -> None:
    p = Pair()
    p.register_both()
    p.send(p.x, "Y", b"a" * 50, ("198.18.9.9", 4000))  # from an address that did not register
    assert p.core.forwarded == 0 and p.core.forwarded_bytes == 0
    assert p.core.dropped == 1
