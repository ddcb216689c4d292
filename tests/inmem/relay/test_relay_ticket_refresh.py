"""Relay tickets renewed for long relayed sessions (RelayClient.set_ticket against RelayCore).

    t=0      both register with tickets that end at t=30
    t=20     the platform re-issues tickets (ending t=80); set_ticket re-registers at once
    t=31..   the first tickets have expired: forwarding goes on (new registrations), and a
             client that never got a new ticket is gone
"""

from __future__ import annotations

from enclave.agent.relay_client import RelayClient
from tests.support.relay import RELAY, X_ADDR, Y_ADDR, Pair, ticket


def _pair_with_short_tickets(ttl: int) -> Pair:
    p = Pair()
    p.register_both(ttl=ttl)
    assert p.registered == {"X", "Y"}
    return p


def test_set_ticket_reregisters_and_the_session_outlives_the_first_ticket() -> None:
    p = _pair_with_short_tickets(30)
    p.now += 20
    # new tickets are minted relative to the test's NOW: 80 s after the start
    p.to_relay(p.x.set_ticket("Y", ticket("XXXXX", "YYYYY", ttl=80), p.now), X_ADDR)
    p.to_relay(p.y.set_ticket("X", ticket("YYYYY", "XXXXX", ttl=80), p.now), Y_ADDR)
    p.now += 15  # t=35: past the first tickets
    p.core.expire(p.now)
    assert len(p.core) == 2
    p.send(p.x, "Y", b"still relayed", X_ADDR)
    p.send(p.y, "X", b"both ways", Y_ADDR)
    assert [m for _, m in p.got["Y"]] == [b"still relayed"]
    assert [m for _, m in p.got["X"]] == [b"both ways"]


def test_without_a_new_ticket_the_registration_ends_with_the_ticket() -> None:
    p = _pair_with_short_tickets(30)
    p.now += 20
    p.to_relay(p.x.set_ticket("Y", ticket("XXXXX", "YYYYY", ttl=80), p.now), X_ADDR)
    p.to_relay(p.y.due(p.now + 100), Y_ADDR)  # Y refreshes with its OLD ticket only
    p.now += 15
    p.core.expire(p.now)
    assert len(p.core) == 1
    p.send(p.x, "Y", b"lost", X_ADDR)
    assert p.got["Y"] == []


def test_set_ticket_for_unknown_or_unregistered_channels_sends_nothing() -> None:
    c = RelayClient()
    assert c.set_ticket("Y", ticket("XXXXX", "YYYYY"), 0.0) == []
    out = c.add("Y", RELAY, ticket("XXXXX", "YYYYY"), 0.0)
    assert len(out) == 1
    new = ticket("XXXXX", "YYYYY", ttl=900)
    assert c.set_ticket("Y", new, 1.0) == []  # not registered yet: the next retry carries it
    retry = c.due(100.0)
    assert len(retry) == 1 and retry[0][0].endswith(new)
