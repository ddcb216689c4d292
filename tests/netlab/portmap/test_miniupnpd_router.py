"""A lab router running Debian's miniupnpd grants mappings to the agent's port-mapping client,
by each protocol, and the mapping really forwards; the lab leaves nothing behind.

    p (198.18.0.11) --udp--> 198.18.1.1:EXT  [router "a": symmetric NAT + miniupnpd + stund]
                                   |  DNAT (table inet miniupnpd)
                                   v
                             a1 198.19.1.11:PORT   <- tests.support.portmap_probe METHOD
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from enclave.netlab import Lab, NatType, Site, Topology, state, upnp
from tests.support.lab import LabFactory
from tests.support.portmap_probe import probe_argv
from tests.support.proc import ENV, REPO

pytestmark = [
    pytest.mark.netlab,
    pytest.mark.root,
    pytest.mark.skipif(shutil.which(upnp.MINIUPNPD) is None or shutil.which(upnp.STUND) is None,
                       reason="miniupnpd / stund not installed (install.sh test installs them)"),
]
PORTS = {"pcp": 40101, "nat-pmp": 40102, "upnp": 40103}


@pytest.fixture(scope="module")
def lab(netlab_required: None) -> Iterator[Lab]:
    topo = Topology(sites=[Site("a", nat=NatType.SYMMETRIC, upnp=True)], public_hosts=["p"])
    with Lab(topo) as lab:
        yield lab


def _delivered(lab: Lab, sock: socket.socket, ext: str, payload: bytes, tries: int = 3) -> bool:
    """Whether a datagram from the public host to `ext` reaches `sock` in a1 (one second per
    try)."""
    host, port = ext.rsplit(":", 1)
    sender = lab.public_host("p").socket()
    try:
        sock.settimeout(1.0)
        for _ in range(tries):
            sender.sendto(payload, (host, int(port)))
            try:
                data, _ = sock.recvfrom(100)
            except TimeoutError:
                continue
            if data == payload:
                return True
        return False
    finally:
        sender.close()


@pytest.mark.parametrize("method", ["pcp", "nat-pmp", "upnp"])
def test_each_protocol_maps_renews_forwards_and_releases(lab: Lab, method: str) -> None:
    a1 = lab.host("a1")
    router = lab.site("a").router_netns
    port = PORTS[method]
    sock = a1.socket()
    sock.bind(("0.0.0.0", port))
    public = f"{lab.site('a').public_ip}:{port}"
    # a symmetric NAT lets nothing in unasked
    assert not _delivered(lab, sock, public, b"before", tries=1)
    probe = a1.popen(probe_argv(port, method), env=ENV, cwd=REPO, stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert probe.stdout is not None and probe.stdin is not None
        got: dict[str, Any] = json.loads(probe.stdout.readline() or "{}")
        assert got.get("method") == method, (got, upnp.log_text(lab.prefix, "a")[-3000:])
        assert got["external"].startswith(f"{lab.site('a').public_ip}:")
        assert got["internal_port"] == port and got["lifetime"] > 0
        assert f"dnat ip to {a1.ip}:{port}" in upnp.rules(router)
        assert _delivered(lab, sock, got["external"], b"mapped " + method.encode())
        probe.stdin.write("renew\n")  # the renewal keeps the address, adds no second rule
        probe.stdin.flush()
        again = json.loads(probe.stdout.readline() or "{}")
        assert (again.get("method"), again.get("external")) == (method, got["external"]), again
        assert again["granted_at"] > got["granted_at"]
        assert upnp.rules(router).count(f"dnat ip to {a1.ip}:{port}") == 1
        probe.stdin.write("\n")
        probe.stdin.flush()
        assert probe.stdout.readline().strip() == "released"
        assert f"dnat ip to {a1.ip}:{port}" not in upnp.rules(router)
        assert not _delivered(lab, sock, got["external"], b"after", tries=1)
    finally:
        probe.kill()
        probe.wait(10)
        sock.close()


def test_another_hosts_address_is_refused_in_secure_mode(lab: Lab) -> None:
    """secure_mode: a host maps only to itself (a PCP request naming another client address)."""
    a1 = lab.host("a1")
    out = a1.run([sys.executable, "-c", f"""
import socket
from enclave.discovery import portmap_wire as pw
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
nonce = bytes(12)
s.sendto(pw.encode_pcp_map(nonce, "198.19.1.99", 40110, 600), ("{a1.gateway}", pw.SERVER_PORT))
print(pw.decode_pcp_map(s.recv(1100), nonce, 40110))
"""], env=ENV, cwd=REPO, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("Refused("), out.stdout  # ADDRESS_MISMATCH
    assert "198.19.1.99" not in upnp.rules(lab.site("a").router_netns)


def test_lab_close_removes_miniupnpd_its_rules_and_files(netlab_required: None) -> None:
    topo = Topology(sites=[Site("z", nat=NatType.PORT_RESTRICTED, upnp=True)])
    lab = Lab(topo).start()
    router = lab.site("z").router_netns
    files = state.run_files(lab.prefix)
    try:
        assert (files / "miniupnpd-z.conf").exists()
        assert "chain prerouting_miniupnpd" in upnp.rules(router)
        pids = subprocess.run(["ip", "netns", "pids", router], capture_output=True, text=True,
                              check=True).stdout.split()
        names = {open(f"/proc/{pid}/comm").read().strip() for pid in pids}
        assert {"miniupnpd", "stund"} <= names
    finally:
        lab.close()
    assert not files.exists()
    assert router not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                        text=True, check=True).stdout
    for pid in pids:  # the router's daemons died with it
        assert not _alive(int(pid))


def _alive(pid: int) -> bool:
    """Whether `pid` is a running miniupnpd or stund (a zombie awaiting its reaper is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    return comm in ("miniupnpd", "stund") and stat[stat.rindex(")") + 2] not in "ZX"


CHILD = """
import json, time
from enclave.netlab import Lab, NatType, Site, Topology, state
with Lab(Topology(sites=[Site("k", nat=NatType.SYMMETRIC, upnp=True)])) as lab:
    print(json.dumps({"prefix": lab.prefix, "router": lab.site("k").router_netns,
                      "files": str(state.run_files(lab.prefix))}), flush=True)
    time.sleep(300)
"""


def test_a_killed_run_s_miniupnpd_and_files_are_reaped_by_the_next_lab(
        lab_factory: LabFactory) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD], env=ENV, cwd=REPO,
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert child.stdout is not None
        info = json.loads(child.stdout.readline() or "{}")
        assert info, "the child lab did not come up"
        pids = subprocess.run(["ip", "netns", "pids", info["router"]], capture_output=True,
                              text=True, check=True).stdout.split()
    finally:
        child.kill()  # SIGKILL: no teardown runs
        child.wait(10)
    assert any(_alive(int(pid)) for pid in pids)  # the dead run left miniupnpd behind
    assert os.path.isdir(info["files"])
    lab_factory(Topology(sites=[Site("a", nat=NatType.PORT_RESTRICTED)]))  # reaps at start
    assert not any(_alive(int(pid)) for pid in pids)
    assert not os.path.exists(info["files"])
