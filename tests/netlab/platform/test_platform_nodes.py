"""Two platform nodes on one PostgreSQL are one platform: fan-out between them, and failover.

    plat1 (public): enclave platform serve --db URL   (init --db --url N1 --url N2 ran here)
    plat2 (public): enclave platform serve --db URL   (empty data directory: keys from the store)
         |  198.18.0.0/16               both nodes on one throwaway PostgreSQL (Unix socket)
    +----+-----+    +----+-----+
    | fc NAT   |    | fd NAT   |      fc1, fd1: `enclave up` (TAP + compiled data plane)
    |  fc1     |    |  fd1     |
    +----------+    +----------+

1. Fan-out: fc1 enrols through node 1 (the token's first URL), fd1 through node 2 (the same
   key's token with node 2's URL first); each is connected to its own node. Mutual intent
   introduces them (node 1 tells fc1, node 2 tells fd1) and they ping over the overlay. A URL
   added (then removed) with `platform urls` reaches both agents and their enrolment records.
   `platform nodes --json` lists both nodes alive, one agent each.
2. Failover: their intents are removed (withdrawn), node 1 is killed (SIGKILL); fc1 reconnects
   to node 2 by itself; intent stated afterwards (fc1's intent goes to node 2 too) introduces
   them again through node 2, and they ping over the overlay. `platform nodes` shows node 1
   stale once its heartbeat is older than the presence TTL, node 2 alive with both agents.
3. Nothing lost: node 1 comes back, node 2 is killed with the pair introduced; both agents move
   to node 1, which introduces them again from the stored intents, and the session carries on.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from enclave.cert.enrolment import EnrolmentToken
from enclave.netlab import Lab, NatType, Site, Topology
from enclave.platform.presence import HEARTBEAT, PRESENCE_TTL
from tests.support.lab import API_PORT, Agent, intents_both_ways, runner, spawner
from tests.support.platform import Platform
from tests.support.postgres import PostgresCluster
from tests.support.proc import enclave
from tests.support.traffic import ping
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]
PASSPHRASE_ENV = "ENCLAVE_PLATFORM_KEY_PASSPHRASE"
STALE_AFTER = int(HEARTBEAT) + 3  # seconds: a live node beats every HEARTBEAT

World = tuple[Lab, Platform, Platform, Agent, Agent]


def _node(lab: Lab, tmp: Path, host: str, db: str, env: dict[str, str], admin: str) -> Platform:
    ph = lab.public_host(host)
    plat = Platform(tmp / host, f"https://{ph.ip}:{API_PORT}", f"{ph.ip}:{API_PORT}",
                    runner(ph), spawner(ph), tmp / f"{host}.log", admin_token=admin,
                    database=db)
    plat.extra_env.update(env)
    return plat


@pytest.fixture(scope="module")
def world(netlab_required: None, postgres_cluster: PostgresCluster,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("nodes")
    db = postgres_cluster.create_database()
    env = {"ENCLAVE_PLATFORM_DB": db, PASSPHRASE_ENV: "nodes-" + os.urandom(8).hex()}
    topo = Topology(sites=[Site("fc", nat=NatType.FULL_CONE), Site("fd", nat=NatType.FULL_CONE)],
                    public_hosts=["plat1", "plat2"])
    lab = Lab(topo).start()
    nodes: list[Platform] = []
    agents: list[Agent] = []
    try:
        p1, p2 = lab.public_host("plat1"), lab.public_host("plat2")
        url1, url2 = f"https://{p1.ip}:{API_PORT}", f"https://{p2.ip}:{API_PORT}"
        res = runner(p1)(["env", *(f"{k}={v}" for k, v in env.items()),
                          *enclave("platform", "init", "--data", str(tmp / "plat1"), "--url",
                                   url1, "--url", url2, "--org", "acme")])
        assert res.returncode == 0, res.stderr
        admin = res.stdout.strip().splitlines()[-1]
        n1 = _node(lab, tmp, "plat1", db, env, admin)
        n2 = _node(lab, tmp, "plat2", db, env, admin)
        for node in (n1, n2):
            node.start()
            nodes.append(node)
        token = EnrolmentToken.decode(n1.token())
        assert token.urls == (url1, url2)  # one token names every node
        a = Agent(lab.host("fc1"), tmp / "fc1", tmp / "fc1.log")
        b = Agent(lab.host("fd1"), tmp / "fd1", tmp / "fd1.log")
        agents += [a, b]
        a.enrol(token.encode())
        b.enrol(replace(token, url=url2, more=(url1,)).encode())  # through node 2
        for agent in agents:
            agent.up()
        yield lab, n1, n2, a, b
    finally:
        for agent in agents:
            agent.down()
        for node in nodes:
            node.stop()
        lab.close()


def _via(agent: Agent) -> str:
    platform = agent.status()["platform"]
    return str(platform["via"]) if platform["state"] == "connected" else ""


def _nodes(plat: Platform, stale_after: int = PRESENCE_TTL) -> dict[str, tuple[str, int]]:
    """`enclave platform nodes --json`: (state, agents) by listen address."""
    res = plat.cli("nodes", "--json", "--stale-after", str(stale_after))
    assert res.returncode == 0, res.stderr
    return {n["listen"]: (n["state"], n["agents"]) for n in json.loads(res.stdout)["nodes"]}


def _meet(a: Agent, b: Agent) -> None:
    wait_for(lambda: a.connected(b.name) and b.connected(a.name), timeout=30,
             what=f"{a.name} <-> {b.name} session")
    assert ping(a.host, b.overlay_ip, count=3) >= 2
    assert ping(b.host, a.overlay_ip, count=3) >= 2


def test_two_nodes_share_keys_and_fan_out(world: World) -> None:
    _lab, n1, n2, a, b = world
    assert not (n2.data / "keys.kek").exists()  # the passphrase is the key-encryption key
    for name in ("ca.crt", "tls.crt", "ca.key", "tls.key", "relay.key"):
        assert (n2.data / name).read_bytes() == (n1.data / name).read_bytes(), name
    host1 = n1.listen.split(":")[0]
    host2 = n2.listen.split(":")[0]
    wait_for(lambda: host1 in _via(a) and host2 in _via(b), timeout=20,
             what="fc1 on node 1, fd1 on node 2")
    wait_for(lambda: _nodes(n2) == {n1.listen: ("alive", 1), n2.listen: ("alive", 1)},
             timeout=20, what="both nodes alive in `platform nodes`, one agent each")
    intents_both_ways(a, b)
    _meet(a, b)  # introduced across nodes: node 1 told fc1, node 2 told fd1
    assert f"introduced {min(a.name, b.name)} <-> {max(a.name, b.name)}" in n1.log()
    assert f"introduced {min(a.name, b.name)} <-> {max(a.name, b.name)}" in n2.log()
    # `platform urls add|remove` reaches connected agents on both nodes, kept in their records
    extra = "https://198.18.0.250:8443"
    assert n1.cli("urls", "add", extra).returncode == 0
    for agent in (a, b):
        wait_for(lambda agent=agent: extra in agent.status()["platform"]["urls"], timeout=20,
                 what=f"{agent.name} told the new URL")
        record = json.loads((agent.state / "enrolment.json").read_text())
        assert extra in record["urls"]
    assert n2.cli("urls", "remove", extra).returncode == 0
    for agent in (a, b):
        wait_for(lambda agent=agent: extra not in agent.status()["platform"]["urls"],
                 timeout=20, what=f"{agent.name} told the URL is gone")


def test_failover_to_the_other_node(world: World) -> None:
    _lab, n1, n2, a, b = world
    intents_both_ways(a, b, "remove")
    wait_for(lambda: a.peer(b.name) is None and b.peer(a.name) is None, timeout=30,
             what="withdrawal after the intents were removed")
    assert n1.proc is not None
    n1.proc.send_signal(signal.SIGKILL)  # node 1 goes away without a word
    n1.proc.wait(timeout=10)
    host2 = n2.listen.split(":")[0]
    wait_for(lambda: host2 in _via(a), timeout=30, what="fc1 reconnected to node 2")
    intents_both_ways(a, b)  # fc1's intent reaches node 2: node 1's URL does not answer
    _meet(a, b)
    # stale after a few heartbeats' time (the default, PRESENCE_TTL, would cost the test 20 s)
    wait_for(lambda: _nodes(n2, STALE_AFTER) == {n1.listen: ("stale", 1),
                                                 n2.listen: ("alive", 2)},
             timeout=30, what="node 1 stale, node 2 alive with both agents")


def test_a_node_lost_with_the_pair_introduced(world: World) -> None:
    _lab, n1, n2, a, b = world
    n1.start()  # back, with the same data directory
    assert a.connected(b.name) and b.connected(a.name)
    host1 = n1.listen.split(":")[0]
    mark = len(n1.log())
    assert n2.proc is not None
    n2.proc.send_signal(signal.SIGKILL)
    n2.proc.wait(timeout=10)
    wait_for(lambda: host1 in _via(a) and host1 in _via(b), timeout=30,
             what="both agents reconnected to node 1")
    pair = f"introduced {min(a.name, b.name)} <-> {max(a.name, b.name)}"
    wait_for(lambda: pair in n1.log()[mark:], timeout=30,
             what="node 1 introduces the pair from the stored intents")
    _meet(a, b)
