"""Tag policies end to end on loopback: a real platform process, real `enclave up` agents.

    enclave platform policy add --name web-db --from tag:web --to tag:db

Agents tagged web and db are introduced with no manual intent (the platform offers CA-signed
intents, each agent counter-signs); an untagged agent learns nothing; removing the policy
withdraws the introduction; adding it again re-introduces.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from enclave.agent.localapi import call
from tests.support.agent import AgentProc
from tests.support.platform import Platform
from tests.support.proc import free_port
from tests.support.wait import wait_for


def _peers(a: AgentProc) -> set[str]:
    """Names `enclave peers` would show (asked over the agent's socket: fast to poll)."""
    return {p["name"] for p in call(a.state, "peers", timeout=5)}


def _intents(a: AgentProc) -> list[str]:
    return sorted(call(a.state, "status", timeout=5)["intents"])


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Platform, dict[str, AgentProc]]]:
    tmp = tmp_path_factory.mktemp("policy")
    plat = Platform.loopback(tmp, ENCLAVE_PLATFORM_RELAY=f"127.0.0.1:{free_port()}")
    agents: dict[str, AgentProc] = {}
    try:
        # web is tagged at enrolment, db later by the admin (`systems tag`), other never
        for role, tags in (("web", ("--tags", "web")), ("db", ()), ("other", ())):
            token = plat.token(*tags)
            a = AgentProc.local(tmp, role)
            a.enrol(token)
            agents[role] = a
        with ThreadPoolExecutor(len(agents)) as pool:  # process start-up dominates: in parallel
            list(pool.map(lambda a: a.up(), agents.values()))
        yield plat, agents
    finally:
        for a in agents.values():
            a.down()
        plat.stop()


def test_policy_introduces_and_removal_withdraws(
        tagged: tuple[Platform, dict[str, AgentProc]]) -> None:
    plat, ag = tagged
    web, db, other = ag["web"], ag["db"], ag["other"]
    for a in ag.values():
        wait_for(lambda a=a: call(a.state, "status")["platform"]["state"] == "connected",
                 what="control channel")
    res = plat.cli("policy", "add", "--name", "web-db", "--from", "tag:web", "--to", "tag:db")
    assert res.returncode == 0, res.stderr
    time.sleep(0.5)  # negative check: no db system yet, so nobody may be introduced
    assert _peers(web) == set() and _peers(db) == set()
    res = plat.cli("systems", "tag", db.name, "+db")
    assert res.returncode == 0, res.stderr
    wait_for(lambda: _peers(web) == {db.name} and _peers(db) == {web.name},
             timeout=10, what="introduction by policy")
    assert _peers(other) == set()
    listed = web.cmd("intent", "list", "--json")
    assert listed.returncode == 0 and '"policy": "web-db"' in listed.stdout, listed.stdout
    assert _intents(web) == [db.name] and _intents(db) == [web.name]
    assert web.peers()[0]["state"] == "introduced"  # --no-tap: control plane only

    res = plat.cli("policy", "remove", "web-db")
    assert res.returncode == 0, res.stderr
    # the removal is stored: the platform sees it at its next look at the store's generation
    # (every TICK), not its periodic full pass (FULL_TICK, 5 s); the CLI's own start-up is
    # not the platform's time (it took seconds on a loaded machine)
    t0 = time.time()
    wait_for(lambda: _peers(web) == set() and _peers(db) == set(), timeout=10,
             what="withdrawal after policy remove")
    assert web.withdrawn_at(db.name) - t0 < 3.0
    wait_for(lambda: _intents(web) == [] and _intents(db) == [], what="intents gone")

    # the same policy again: introduced again (offers are not remembered past their rows)
    res = plat.cli("policy", "add", "--name", "web-db", "--from", "tag:web", "--to", "tag:db")
    assert res.returncode == 0, res.stderr
    wait_for(lambda: _peers(web) == {db.name} and _peers(db) == {web.name},
             timeout=10, what="re-introduction after policy re-add")
    assert _peers(other) == set()
