"""Which UPnP URLs count as the default gateway's (ssdp.gateway_url): plain http to
the gateway's IPv4 address, nothing a URL parser could read as another host."""

from __future__ import annotations

import logging

import pytest

from enclave.agent.portmap import UpnpIgd
from enclave.agent.ssdp import gateway_url
from enclave.logsafe import RejectionLog

GW = "198.19.1.1"


@pytest.mark.parametrize("url", [
    "http://198.19.1.1:5000/ctl/IPConn",
    "http://198.19.1.1/ctl/IPConn",
    "http://198.19.1.1:80",
])
def test_the_gateway_s_own_url_is_trusted(url: str) -> None:
    assert gateway_url(url, GW)


@pytest.mark.parametrize("url", [
    "http://198.19.1.12:5000/ctl/IPConn",  # another LAN host
    "http://198.18.0.11:5000/ctl",  # a host outside
    "https://198.19.1.1:5000/ctl",  # miniupnpc speaks http only
    "ftp://198.19.1.1/ctl",
    "http://router.lan:5000/ctl",  # a name resolves to anything
    "http://198.19.1.1@198.19.1.12:5000/ctl",  # user part: the host is the second
    "http://198.19.1.12@198.19.1.1:5000/ctl",  # a parser differential waiting to happen
    "http://198.19.1.1:5000\\@198.19.1.12/ctl",
    "http://198.19.1.1 :5000/ctl",
    "http://198.19.1.1:99999/ctl",
    "http://198.19.1.1:x/ctl",
    "http://0xC6130101/ctl",  # the gateway spelled as one number
    "http://198.19.1.01/ctl",
    "http://[::ffff:198.19.1.1]/ctl",
    "http://198.19.1.1\u00a0/ctl",
    "http://198.19.1.1\n/ctl",
    "",
    "/ctl/IPConn",
])
def test_anything_else_is_not(url: str) -> None:
    assert not gateway_url(url, GW)


def test_no_gateway_address_trusts_nothing() -> None:
    assert not gateway_url("http://198.19.1.1/ctl", "")
    assert not gateway_url("http://198.19.1.1/ctl", "not an address")


def test_an_igd_elsewhere_is_refused_and_logged_within_budget(
        caplog: pytest.LogCaptureFixture) -> None:
    """An IGD selected at another host: add() and delete() give nothing, and the rejection is
    logged at most `burst` times (the netlab test tests/netlab/portmap/test_upnp_not_the_gateway
    shows that no mapping request reaches such a device)."""
    igd = UpnpIgd(RejectionLog(logging.getLogger("enclave.agent.portmap"), burst=2))
    igd.control_url = "http://127.0.0.1:9/ctl/IPConn"
    with caplog.at_level(logging.INFO, "enclave.agent.portmap"):
        for _ in range(5):
            assert igd.add(40000, 600, GW) is None
        assert not igd.delete(40000, GW)
    lines = [r.getMessage() for r in caplog.records if "not the gateway" in r.getMessage()]
    assert len(lines) == 2 and "127.0.0.1:9" in lines[0], lines
