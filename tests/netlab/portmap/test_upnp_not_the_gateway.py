"""A LAN host that is not the gateway answers SSDP as a UPnP-IGD: the agent's port-mapping client
sends it no mapping request and reports no mapping from it.

    a1 198.19.1.11   tests.support.portmap_probe PORT upnp   (M-SEARCH to 239.255.255.250:1900)
    a2 198.19.1.12   tests.support.fake_igd: answers SSDP with LOCATION http://a2/..., serves an
                     IGD description and grants every SOAP AddPortMapping (external 198.18.77.77)
    router "a"       symmetric NAT, no UPnP, no PCP, no NAT-PMP

Before the gateway check, miniupnpc selected a2 and the client sent it AddPortMapping and
reported a2's made-up external address as its mapping.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from enclave.netlab import Lab, NatType, Site, Topology
from tests.support.fake_igd import fake_igd_argv
from tests.support.portmap_probe import probe_argv
from tests.support.proc import ENV, REPO

pytestmark = [pytest.mark.netlab, pytest.mark.root]
PORT = 40121


@pytest.fixture
def lab(netlab_required: None) -> Iterator[Lab]:
    with Lab(Topology(sites=[Site("a", nat=NatType.SYMMETRIC, hosts=2)])) as lab:
        yield lab


def test_an_igd_that_is_not_the_gateway_is_not_used(lab: Lab) -> None:
    a1, a2 = lab.host("a1"), lab.host("a2")
    igd = a2.popen(fake_igd_argv(a2.ip), env=ENV, cwd=REPO, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, text=True)
    try:
        assert igd.stdout is not None
        assert igd.stdout.readline().strip() == "ready", igd.stderr.read() if igd.stderr else ""
        probe = a1.run(probe_argv(PORT, "upnp"), env=ENV, cwd=REPO, input="\n", timeout=60)
        assert probe.returncode == 0, probe.stderr
    finally:
        igd.kill()
        out, _ = igd.communicate(timeout=10)
    lines = probe.stdout.splitlines()
    got = json.loads(lines[0])
    seen = [json.loads(line) for line in out.splitlines()]
    # the fake IGD was found: a1's M-SEARCH reached it, miniupnpc fetched its description
    assert {"kind": "ssdp", "from": str(a1.ip)} in seen, seen
    assert any(r["kind"] == "http" and r["method"] == "GET" for r in seen), seen
    # ... and not used: no mapping asked of it, none reported
    assert not [r for r in seen if r.get("action") in ("AddPortMapping", "DeletePortMapping")], seen
    assert "error" in got and "method" not in got, got
    assert "198.18.77.77" not in probe.stdout
    assert lines[1:] == ["released"]
