"""A LAN host that is not the gateway answers SSDP as a UPnP-IGD: the agent's port-mapping client
sends it no request at all (no description fetch, no SOAP of any kind), whether or not the real
gateway is an IGD too.

    a1 198.19.1.11   tests.support.portmap_probe PORT upnp   (M-SEARCH to 239.255.255.250:1900)
    a2 198.19.1.12   tests.support.fake_igd: answers SSDP with LOCATION http://a2/..., serves an
                     IGD description and grants every SOAP AddPortMapping (external 198.18.77.77)
    router "a"       symmetric NAT; no UPnP, PCP or NAT-PMP in the first test, miniupnpd
                     (enclave.netlab.upnp) in the second

Before the gateway check, miniupnpc selected a2 and the client sent it AddPortMapping and
reported a2's made-up external address as its mapping. With the check on miniupnpc's selected
control URL only, miniupnpc still fetched a2's description and asked it GetStatusInfo and
GetExternalIPAddress while selecting; now the client runs the SSDP search itself
(enclave.agent.ssdp) and gives miniupnpc only the gateway's LOCATION.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from enclave.agent import ssdp
from enclave.netlab import Lab, NatType, Site, Topology, upnp
from tests.support.fake_igd import FAKE_EXTERNAL, fake_igd_argv
from tests.support.lab import LabFactory
from tests.support.portmap_probe import probe_argv
from tests.support.proc import ENV, REPO

pytestmark = [pytest.mark.netlab, pytest.mark.root]
PORT = 40121


def _probe_beside_fake_igd(lab: Lab) -> tuple[list[str], list[dict[str, str]]]:
    """Run the upnp probe on a1 (map, then release) while the fake IGD runs on a2: the probe's
    output lines and the fake IGD's records of what reached it."""
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
    seen = [json.loads(line) for line in out.splitlines()]
    # the fake IGD got no request at all: no description fetch, no SOAP ...
    assert [r for r in seen if r["kind"] != "ssdp"] == [], seen
    # ... though it heard a1's M-SEARCHes (and answered them): the client's own, one per
    # searched type, none from miniupnpc
    searches = sorted(r["st"] for r in seen if r["kind"] == "ssdp" and r["from"] == str(a1.ip))
    assert searches == sorted(ssdp.SEARCH_TARGETS), seen
    assert FAKE_EXTERNAL not in probe.stdout
    return probe.stdout.splitlines(), seen


def test_an_igd_that_is_not_the_gateway_is_not_used(lab_factory: LabFactory) -> None:
    lab = lab_factory(Topology(sites=[Site("a", nat=NatType.SYMMETRIC, hosts=2)]))
    lines, _ = _probe_beside_fake_igd(lab)
    got = json.loads(lines[0])
    assert "error" in got and "method" not in got, got
    assert lines[1:] == ["released"]


@pytest.mark.skipif(shutil.which(upnp.MINIUPNPD) is None or shutil.which(upnp.STUND) is None,
                    reason="miniupnpd / stund not installed (install.sh test installs them)")
def test_the_gateway_s_igd_maps_while_a_lan_host_also_answers(lab_factory: LabFactory) -> None:
    lab = lab_factory(Topology(sites=[Site("a", nat=NatType.SYMMETRIC, hosts=2, upnp=True)]))
    lines, _ = _probe_beside_fake_igd(lab)
    got: dict[str, Any] = json.loads(lines[0])
    assert got.get("method") == "upnp", (got, upnp.log_text(lab.prefix, "a")[-3000:])
    assert got["external"] == f"{lab.site('a').public_ip}:{PORT}", got
    assert lines[1:] == ["released"]
    assert f"dnat ip to {lab.host('a1').ip}:{PORT}" not in upnp.rules(lab.site("a").router_netns)
