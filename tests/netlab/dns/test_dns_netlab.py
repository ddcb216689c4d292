"""NAME.enclave from a real agent, asked with `dig` from its peer over the overlay.

    site "fc" (full cone)          site "pr" (port restricted)        public: plat
      fc1: agent A  <------ overlay (direct) ------>  pr1: agent B      (platform)
      fc2: agent C, running with --no-dns, introduced to A only
                                                      pr2: D, enrolled, never up or introduced

From B: `dig @<A's overlay IP> NAME.enclave` (UDP, then +tcp) answers A's and B's own names
with their overlay IPs, case-insensitively; D (exists, not introduced), C (introduced to A, not
to B) and a name that exists nowhere get the same NXDOMAIN; another zone is REFUSED. A asking
itself sees C too. Once the intent is removed, B's name is NXDOMAIN on A. C answers nothing on
port 53 (--no-dns).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import pytest

from enclave.netlab import Host, Lab, NatType, Site, Topology
from tests.support.lab import Agent, intents_both_ways, platform_lab, start_all
from tests.support.platform import Platform
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]
CONNECT_TIMEOUT = 20.0
HEADER = re.compile(r"opcode: (\w+), status: (\w+), id: \d+\n;; flags: ([a-z ]+);")


def dig(host: Host, server: str, name: str, *opts: str, rdtype: str = "A") -> tuple[str, str, str]:
    """(rcode, header flags, answer IPs) of `dig @server name rdtype` run in host's namespace."""
    res = host.run(["dig", f"@{server}", name, rdtype, "+tries=1", "+time=3", *opts], timeout=20)
    m = HEADER.search(res.stdout)
    assert m is not None, f"no DNS reply from {server} for {name}:\n{res.stdout}{res.stderr}"
    answers = re.findall(rf"^{re.escape(name.rstrip('.'))}\.\s+\d+\s+IN\s+A+\s+(\S+)$",
                         res.stdout, re.MULTILINE | re.IGNORECASE)
    return m.group(2), m.group(3), " ".join(sorted(answers))


@pytest.fixture(scope="module")
def world(netlab_required: None, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Lab, Platform, dict[str, Agent]]]:
    if shutil.which("dig") is None:
        pytest.skip("dig is not installed (apt-get install bind9-dnsutils)")
    topo = Topology(sites=[Site("fc", nat=NatType.FULL_CONE, hosts=2),
                           Site("pr", nat=NatType.PORT_RESTRICTED, hosts=2)],
                    public_hosts=["plat"])
    hosts = ("fc1", "pr1", "fc2", "pr2")
    with platform_lab(topo, tmp_path_factory.mktemp("dns"), hosts) as world:
        _lab, _plat, agents = world
        start_all([agents["fc1"], agents["pr1"]])
        start_all([agents["fc2"]], "--no-dns")
        a, b, c = agents["fc1"], agents["pr1"], agents["fc2"]
        intents_both_ways(a, b)
        intents_both_ways(a, c)
        wait_for(lambda: a.connected(b.name) and b.connected(a.name), timeout=CONNECT_TIMEOUT,
                 interval=0.2, what="A and B connected")
        wait_for(lambda: a.peer(c.name), timeout=CONNECT_TIMEOUT, interval=0.2,
                 what="A introduced to C")
        yield world


@pytest.mark.parametrize("opts", [(), ("+tcp",)], ids=["udp", "tcp"])
def test_peer_names_answer_and_others_are_cloaked(
        world: tuple[Lab, Platform, dict[str, Agent]], opts: tuple[str, ...]) -> None:
    _lab, _plat, agents = world
    a, b, c, d = agents["fc1"], agents["pr1"], agents["fc2"], agents["pr2"]
    ask = b.host  # the peer asks A's server over the overlay

    rcode, flags, ips = dig(ask, a.overlay_ip, f"{b.name.lower()}.enclave", *opts)
    assert (rcode, ips) == ("NOERROR", b.overlay_ip)
    assert "aa" in flags.split()
    assert dig(ask, a.overlay_ip, f"{a.name}.ENCLAVE", *opts)[::2] == ("NOERROR", a.overlay_ip)

    hidden = dig(ask, a.overlay_ip, f"{d.name}.enclave", *opts)  # exists, not introduced
    absent = dig(ask, a.overlay_ip, "zz9zz.enclave", *opts)  # exists nowhere
    others = dig(ask, a.overlay_ip, f"{c.name}.enclave", *opts)  # A's peer, not B's
    assert hidden == absent == others == ("NXDOMAIN", hidden[1], "")
    # A itself sees every peer it was introduced to, and still not D
    assert dig(a.host, a.overlay_ip, f"{c.name}.enclave", *opts)[::2] == (
        "NOERROR", c.overlay_ip)
    assert dig(a.host, a.overlay_ip, f"{d.name}.enclave", *opts)[0] == "NXDOMAIN"

    assert dig(ask, a.overlay_ip, "example.com", *opts)[0] == "REFUSED"
    assert dig(ask, a.overlay_ip, f"{b.name}.enclave", *opts, rdtype="AAAA")[::2] == (
        "NOERROR", b.status()["overlay_ip6"])  # its derived overlay IPv6 (cert/overlay6.py)


def test_no_dns_agent_does_not_answer(world: tuple[Lab, Platform, dict[str, Agent]]) -> None:
    _lab, _plat, agents = world
    c = agents["fc2"]
    res = c.host.run(["dig", f"@{c.overlay_ip}", f"{c.name}.enclave", "+tries=1", "+time=1"],
                     timeout=20)
    assert "status:" not in res.stdout, res.stdout
    assert c.status()["name"] == c.name  # the agent itself runs


def test_withdrawn_peer_is_nxdomain(world: tuple[Lab, Platform, dict[str, Agent]]) -> None:
    _lab, _plat, agents = world
    a, b = agents["fc1"], agents["pr1"]
    b.intent("remove", a.name)
    wait_for(lambda: a.peer(b.name) is None, timeout=10, interval=0.2,
             what="B withdrawn from A")
    assert dig(a.host, a.overlay_ip, f"{b.name}.enclave")[0] == "NXDOMAIN"
    assert dig(a.host, a.overlay_ip, f"{a.name}.enclave")[::2] == ("NOERROR", a.overlay_ip)
