"""The TAP holds the derived overlay IPv6 as a /64, without duplicate address detection: usable
at once (never "tentative"), since it is certified and unique (enclave/dataplane/tap.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from enclave.dataplane.tap import TapDevice
from tests.support.scratch_ns import ns_exec as _in
from tests.support.scratch_ns import scratch_ns

pytestmark = [pytest.mark.netlab, pytest.mark.root]

ADDRESS6 = "fd12:3456:789a::6440:7/64"


@pytest.fixture
def ns() -> Iterator[str]:
    with scratch_ns("a6", "net.ipv6.conf.default.disable_ipv6=0") as name:
        yield name


def test_overlay_ipv6_is_on_the_tap_without_dad(ns: str) -> None:
    with TapDevice("enclave0", mac="02:00:00:00:00:07", address="100.64.0.7/10",
                   address6=ADDRESS6, netns=ns):
        out = json.loads(_in(ns, "ip", "-j", "-6", "addr", "show", "dev", "enclave0"))
        infos = [a for a in out[0]["addr_info"] if a.get("scope") == "global"]
        assert [(a["local"], a["prefixlen"]) for a in infos] == [("fd12:3456:789a::6440:7", 64)]
        assert infos[0].get("nodad") is True
        assert not infos[0].get("tentative")
        routes = _in(ns, "ip", "-6", "route", "show", "dev", "enclave0")
        assert "fd12:3456:789a::/64" in routes
