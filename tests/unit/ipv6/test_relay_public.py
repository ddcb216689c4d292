"""The relay address each system is offered (RelayService.public_for) and the advertised
addresses a public name gives (one per family)."""

from __future__ import annotations

import asyncio

from enclave.discovery.candidates import PathAddr, Transport
from enclave.platform.relay import RelayCore, RelayServer, RelayService, _addresses_of

V4 = PathAddr(Transport.RELAY, "198.18.0.11", 3479)
V6 = PathAddr(Transport.RELAY, "2001:db8::11", 3479)
KEY = bytes(32)


def service(public: PathAddr, alt: PathAddr | None) -> RelayService:
    return RelayService(RelayServer(RelayCore(KEY)), KEY, public, public_alt=alt)


def test_each_family_gets_its_own_address() -> None:
    both = service(V4, V6)
    assert both.public_for(ipv6=False) == V4 and both.public_for(ipv6=True) == V6
    flipped = service(V6, V4)
    assert flipped.public_for(ipv6=False) == V4 and flipped.public_for(ipv6=True) == V6


def test_one_address_is_offered_to_everyone() -> None:
    only4 = service(V4, None)
    assert only4.public_for(ipv6=True) == V4 and only4.public_for(ipv6=False) == V4


def test_literals_are_taken_as_they_are_and_unknown_names_give_nothing() -> None:
    assert asyncio.run(_addresses_of("2001:db8::11")) == ["2001:db8::11"]
    assert asyncio.run(_addresses_of("198.18.0.11")) == ["198.18.0.11"]
    assert asyncio.run(_addresses_of("no-such-host.invalid")) == []
