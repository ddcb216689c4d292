"""Control plane end to end on loopback: a real platform process and real `enclave up` agents.

Covers: authenticated control channel, one-sided intent (no introduction, both directions),
introduction after the second intent, withdrawal on `intent remove` and on revocation, cloaking
of the intents API (byte-identical answers), status/peers JSON, reconnect after platform restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent import AgentProc, loopback_agents
from tests.support.platform import Platform
from tests.support.wait import wait_for


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, list[AgentProc]]]:
    with loopback_agents(tmp_path_factory.mktemp("ctl"), ["agent0", "agent1", "agent2"]
                         ) as (plat, agents):
        yield plat, list(agents.values())


def _connected(a: AgentProc) -> bool:
    return bool(a.status()["platform"]["state"] == "connected")


def test_status_json_and_reflection(world: tuple[Platform, list[AgentProc]]) -> None:
    _plat, (a, _b, _c) = world
    wait_for(lambda: _connected(a), what="control channel")
    st = wait_for(lambda: (s := a.status())["mappings"]["tcp"] and s, what="mappings")
    for key in ("name", "overlay_ip", "cert_expires", "platform", "mappings", "nat"):
        assert key in st
    assert st["name"] == a.name
    assert st["overlay_ip"].startswith("100.")
    # both UDP reflections and the TCP one saw the agent's own data port on loopback
    assert st["mappings"]["udp"] == [f"127.0.0.1:{a.port}"] * 2
    assert st["mappings"]["tcp"] == f"127.0.0.1:{a.port}"
    assert st["nat"] in ("none", "endpoint-independent")
    # ready: the first report of candidates with a classified NAT on a connected channel
    st = wait_for(lambda: (s := a.status())["ready_at"] is not None and s, what="ready_at")
    assert st["started_at"] <= st["ready_at"] <= time.time()


def test_mutual_intent_introduce_and_withdraw(world: tuple[Platform, list[AgentProc]]) -> None:
    plat, (a, b, c) = world
    for x in (a, b, c):
        wait_for(lambda x=x: _connected(x), what="control channel")
    a.intent("add", b.name)
    time.sleep(1.0)  # one-sided: nothing may arrive; check both directions
    assert a.peers() == [] and b.peers() == []
    a.intent("remove", b.name)
    b.intent("add", a.name)
    time.sleep(1.0)
    assert a.peers() == [] and b.peers() == []

    a.intent("add", b.name)
    t0 = time.time()  # the platform has stored the second intent
    wait_for(lambda: a.peer_names() == {b.name} and b.peer_names() == {a.name}, timeout=10,
             what="introduction")
    # latency measured by the agents' own receive times, not by the polling CLI
    assert a.introduced_at(b.name) - t0 < 2.0 and b.introduced_at(a.name) - t0 < 2.0
    peer = a.peers()[0]
    for key in ("name", "state", "path", "endpoint", "rx_bytes", "tx_bytes", "rtt_ms"):
        assert key in peer
    assert any(f":{b.port}" in cand for cand in peer["candidates"])
    # a third system with intent towards a learns nothing: no introduction to anyone
    c.intent("add", a.name)
    time.sleep(0.5)
    assert c.peers() == [] and a.peer_names() == {b.name}
    lst = json.loads(a.intent("list"))["intents"]
    assert {r["peer"]: r["mutual"] for r in lst} == {b.name: True}

    b.intent("remove", a.name)
    t0 = time.time()
    wait_for(lambda: a.peers() == [] and b.peers() == [], timeout=10, what="withdrawal")
    assert a.withdrawn_at(b.name) - t0 < 2.0 and b.withdrawn_at(a.name) - t0 < 2.0
    assert "withdrew" in plat.log()


def test_cloaking_identical_answers(world: tuple[Platform, list[AgentProc]]) -> None:
    _plat, (a, b, _c) = world
    # b exists (and has no intent for a after the previous test); "ZZZZZ" does not exist
    add_real = a.intent("add", b.name)
    a.intent("remove", b.name)
    add_ghost = a.intent("add", "ZZZZZ")
    assert add_real.replace(b.name, "X") == add_ghost.replace("ZZZZZ", "X")
    rm_real = a.intent("remove", b.name)
    rm_ghost = a.intent("remove", "ZZZZZ")
    assert rm_real.replace(b.name, "X") == rm_ghost.replace("ZZZZZ", "X")
    res = a.cmd("intent", "add", a.name)
    assert res.returncode == 1 and "itself" in res.stderr


def test_revocation_withdraws(world: tuple[Platform, list[AgentProc]]) -> None:
    plat, (a, _b, c) = world
    a.intent("add", c.name)
    wait_for(lambda: a.peer_names() == {c.name}, timeout=10, what="introduction a<->c")
    serial_c = c.status()["cert_serial"]
    assert serial_c not in a.status()["revoked_serials"]
    res = plat.cli("systems", "revoke", c.name)
    t0 = time.time()
    assert res.returncode == 0, res.stderr
    wait_for(lambda: a.peers() == [], timeout=10, what="withdrawal after revocation")
    assert a.withdrawn_at(c.name) - t0 < 2.0
    assert a.status()["withdrawals"][-1]["reason"] == "revoked"
    wait_for(lambda: serial_c in a.status()["revoked_serials"], what="CRL pushed")
    wait_for(lambda: c.status()["platform"]["state"] != "connected", what="revoked c cut off")


def test_reconnect_after_platform_restart(world: tuple[Platform, list[AgentProc]],
                                          tmp_path: Path) -> None:
    plat, (a, _b, _c) = world
    wait_for(lambda: _connected(a), what="connected")
    before = a.status()["platform"]["connects"]
    plat.stop()
    wait_for(lambda: not _connected(a), what="disconnect noticed")
    plat.start()
    wait_for(lambda: _connected(a) and a.status()["platform"]["connects"] > before,
             timeout=15, what="reconnect")

