"""`enclave ping`, `enclave netcheck`, `enclave status` and `--log-format json` against a real
platform and real agents in a lab.

                              plat 198.18.0.11 (+ 198.18.0.111: ENCLAVE_DISCOVERY_ALT_ADDRESS)
                              enclave platform serve (reflector on 8443/8444, relay)
          +-----------------+-----------+-----------+-----------------+
     fc (full-cone)    pr (port-restricted)   rs (restricted)   sa, sb (symmetric)
        fc1 <--- direct-udp ---> pr1          rs1 (enrolled,    sa1 <-- relay --> sb1
                                              never introduced)

fc1 and pr1 punch a direct UDP path, sa1 and sb1 (two symmetric NATs) go over the relay.  rs1
runs no agent: `enclave netcheck` there works from the state directory alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from enclave.netlab import Lab, NatType, Site, Topology
from tests.support.lab import Agent, intents_both_ways, platform_lab, start_all
from tests.support.peer_paths import on_path
from tests.support.platform import Platform
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]
ALT = "198.18.0.111"

World = tuple[Lab, Platform, dict[str, Agent]]


@pytest.fixture(scope="module")
def world(netlab_required: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    topo = Topology(sites=[Site("fc", nat=NatType.FULL_CONE),
                           Site("pr", nat=NatType.PORT_RESTRICTED),
                           Site("rs", nat=NatType.RESTRICTED),
                           Site("sa", nat=NatType.SYMMETRIC), Site("sb", nat=NatType.SYMMETRIC)],
                    public_hosts=["plat"])
    tmp = tmp_path_factory.mktemp("diag")
    with platform_lab(topo, tmp, ["fc1", "pr1", "rs1", "sa1", "sb1"]) as (lab, plat, ag):
        # a second address on the platform host for the filtering test, and JSON logs: the
        # platform restarts with both
        plat.stop()
        res = lab.public_host("plat").run(["ip", "addr", "add", f"{ALT}/24", "dev", "eth0"])
        assert res.returncode == 0, res.stderr
        plat.extra_env.update({"ENCLAVE_DISCOVERY_ALT_ADDRESS": ALT, "ENCLAVE_LOG_FORMAT": "json"})
        plat.log_path.write_text("")
        plat.start()
        a, b, sa, sb = ag["fc1"], ag["pr1"], ag["sa1"], ag["sb1"]
        start_all([b, sa, sb])
        a.up("--log-format", "json")
        intents_both_ways(a, b)
        intents_both_ways(sa, sb)
        # relay first: a pair may start on the relay; wait for the path each settles on
        wait_for(lambda: on_path(a, b, "direct-udp") and on_path(b, a, "direct-udp"),
                 timeout=30, what="fc1 <-> pr1 session on direct-udp")
        wait_for(lambda: on_path(sa, sb, "relay-udp") and on_path(sb, sa, "relay-udp"),
                 timeout=40, what="sa1 <-> sb1 relayed session")
        yield lab, plat, ag


def _ping(agent: Agent, name: str, *extra: str) -> tuple[int, str, str]:
    res = agent.run("ping", name, *extra, timeout=60)
    return res.returncode, res.stdout, res.stderr


def test_ping_direct_reports_path_endpoint_rtt(world: World) -> None:
    _lab, _plat, ag = world
    a, b = ag["fc1"], ag["pr1"]
    rc, out, err = _ping(a, b.name.lower(), "-c", "3")  # names are case-insensitive
    assert rc == 0, (out, err)
    lines = out.strip().splitlines()
    assert len(lines) == 3, out
    peer = a.connected(b.name)
    assert peer is not None
    for line in lines:
        assert line.startswith(f"pong from {b.name} ({b.overlay_ip}) via direct-udp "
                               f"{peer['endpoint']} in "), line
        assert line.endswith("ms")
    rc, out, _ = _ping(a, b.name, "--json")
    got = json.loads(out)
    assert rc == 0 and got["ok"] and got["path"] == "direct-udp" and got["rtt_ms"] > 0


def test_ping_over_relay(world: World) -> None:
    _lab, _plat, ag = world
    sa, sb = ag["sa1"], ag["sb1"]
    rc, out, err = _ping(sa, sb.name, "-c", "3", "--json")
    assert rc == 0, (out, err)
    results = [json.loads(line) for line in out.strip().splitlines()]
    assert len(results) == 3
    answered = [r for r in results if r["ok"]]
    assert answered and all(r["path"] == "relay-udp" for r in answered), results


def test_ping_refuses_a_name_that_was_not_introduced(world: World) -> None:
    _lab, _plat, ag = world
    a, rs = ag["fc1"], ag["rs1"]
    for name in (rs.name, "NOSUCH"):  # enrolled but no mutual intent / does not exist at all
        rc, out, err = _ping(a, name, "-c", "2")
        assert rc == 1, (out, err)
        assert out == ""
        assert f"{name} is not a peer of this system" in err
    # same for a peer of someone else: sa1 is a peer of sb1, not of fc1
    rc, _out, err = _ping(a, ag["sa1"].name)
    assert rc == 1 and "is not a peer of this system" in err


def _netcheck(agent: Agent) -> dict[str, Any]:
    res = agent.run("netcheck", "--json", timeout=90)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


@pytest.mark.parametrize(("host", "mapping", "filtering", "nat"), [
    ("fc1", "endpoint-independent", "endpoint-independent", "full cone"),
    ("rs1", "endpoint-independent", "address-dependent", "restricted cone"),
    ("pr1", "endpoint-independent", "address-and-port-dependent", "port-restricted cone"),
    ("sa1", "address-and-port-dependent", "address-and-port-dependent", "symmetric"),
])
def test_netcheck_classifies_the_lab_nat(world: World, host: str, mapping: str, filtering: str,
                                         nat: str) -> None:
    lab, _plat, ag = world
    r = _netcheck(ag[host])
    assert (r["mapping"], r["filtering"], r["nat"]) == (mapping, filtering, nat), r
    public = str(lab.host(host).public_ip)
    assert r["udp"]["reachable"] and r["tcp"]["reachable"], r
    assert all(x.startswith(f"{public}:") for x in r["udp"]["reflected"]), r
    assert r["tcp"]["reflected"].startswith(f"{public}:"), r
    assert r["platform"]["udp_ports"] == [8443, 8444]
    if filtering == "endpoint-independent":
        assert r["filtering_probes"]["other_address_source"].startswith(f"{ALT}:"), r


def test_netcheck_relay_rtt_from_the_agent(world: World) -> None:
    _lab, _plat, ag = world
    sa, sb = ag["sa1"], ag["sb1"]
    r = _netcheck(sa)
    relays = r["relay"]
    assert [x["peer"] for x in relays] == [sb.name], r
    assert relays[0]["rtt_ms"] is not None and relays[0]["rtt_ms"] >= 0  # ms clock: may be 0
    assert relays[0]["relay"].startswith("198.18.0.11:")
    # rs1 runs no agent: no relay measurement, said so in the text report
    res = ag["rs1"].run("netcheck", timeout=90)
    assert res.returncode == 0, res.stderr
    assert "nat          restricted cone" in res.stdout
    assert "relay        not measured (no agent running" in res.stdout


def test_status_has_a_line_per_peer(world: World) -> None:
    _lab, _plat, ag = world
    a, b = ag["fc1"], ag["pr1"]
    res = a.run("status")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("PEER"))
    row = next(line for line in lines[header + 1:] if line.startswith(b.name))
    peer = a.connected(b.name)
    assert peer is not None
    cells = row.split()  # NAME IP PATH SINCE(n ago) ENDPOINT RTT HANDSHAKE(n ago) IN OUT
    assert cells[:3] == [b.name, b.overlay_ip, "direct-udp"] and cells[4] == "ago", row
    assert cells[5] == peer["endpoint"], row
    assert cells[6].endswith("ms") and cells[8] == "ago", row
    # --json keeps the machine form
    st = json.loads(a.run("status", "--json").stdout)
    assert st["name"] == a.name and st["peers"] == 1 and "mappings" in st


def test_json_logs_from_agent_and_platform(world: World) -> None:
    _lab, plat, ag = world
    for text, who in ((ag["fc1"].log(), "agent"), (plat.log(), "platform")):
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert records, who
        assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in records), who
    agent_msgs = [json.loads(line)["msg"] for line in ag["fc1"].log().splitlines()]
    assert any(m.startswith("agent ") and " up (udp/tcp port" in m for m in agent_msgs)
    assert any("serving on" in json.loads(line)["msg"] for line in plat.log().splitlines())
