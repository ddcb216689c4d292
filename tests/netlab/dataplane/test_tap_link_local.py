"""The agent's TAP takes its IPv6 link-local address from its (certified) MAC, modified EUI-64,
whatever the namespace's default addr_gen_mode is: the peers' data planes accept IPv6 only
from that link-local address (enclave/_fp_ident.pxi)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from enclave.dataplane.tap import TapDevice
from tests.support.ident_frames import link_local
from tests.support.scratch_ns import ns_exec as _in
from tests.support.scratch_ns import scratch_ns
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]

MAC = "02:00:00:00:00:07"
ADDR_GEN_MODE_RANDOM = "3"


@pytest.fixture
def ns() -> Iterator[str]:
    with scratch_ns("ll", "net.ipv6.conf.default.disable_ipv6=0",
                    f"net.ipv6.conf.default.addr_gen_mode={ADDR_GEN_MODE_RANDOM}") as name:
        yield name


def _link_locals(ns: str) -> list[str]:
    out = json.loads(_in(ns, "ip", "-j", "-6", "addr", "show", "dev", "enclave0", "scope", "link"))
    return [a["local"] for a in out[0]["addr_info"]] if out else []


def test_link_local_is_the_eui64_of_the_mac_even_where_random_is_the_default(ns: str) -> None:
    with TapDevice("enclave0", mac=MAC, address="100.64.0.7/10", netns=ns):
        assert _in(ns, "cat", "/proc/sys/net/ipv6/conf/enclave0/addr_gen_mode").strip() == "0"
        want = link_local(bytes.fromhex(MAC.replace(":", "")))
        assert wait_for(lambda: _link_locals(ns), timeout=5, what="a link-local address") == [want]
