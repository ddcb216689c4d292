"""The platform with its store on PostgreSQL (`--db postgresql://...`), end to end on loopback:
`platform init --db`, `serve`, the admin commands, real `enclave up` agents. Two agents enrol,
connect, state mutual intent and are introduced; an admin command in another process (revoke)
reaches the running server through the database, which withdraws the pair. No SQLite file is
made in the data directory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent import AgentProc, loopback_agents
from tests.support.platform import Platform
from tests.support.postgres import PostgresCluster
from tests.support.wait import wait_for


@pytest.fixture
def pg_world(tmp_path: Path, postgres_cluster: PostgresCluster
             ) -> Iterator[tuple[Platform, list[AgentProc]]]:
    with loopback_agents(tmp_path, ["pg0", "pg1"], db=postgres_cluster.create_database()
                         ) as (plat, agents):
        yield plat, list(agents.values())


def test_agents_enrol_connect_and_meet_on_postgresql(
        pg_world: tuple[Platform, list[AgentProc]]) -> None:
    plat, (a, b) = pg_world
    assert not (plat.data / "platform.db").exists()  # the store is in PostgreSQL
    listed = json.loads(plat.cli("systems", "list", "--json").stdout)["systems"]
    assert {s["name"] for s in listed} == {a.name, b.name}
    for agent in (a, b):
        wait_for(lambda agent=agent: agent.status()["platform"]["state"] == "connected",
                 what="control channel")
    a.intent("add", b.name)
    b.intent("add", a.name)
    wait_for(lambda: a.peer_names() == {b.name} and b.peer_names() == {a.name}, timeout=15,
             what="introduction through a PostgreSQL-backed platform")
    # another process changes the store: the server notices and withdraws the pair
    assert plat.cli("systems", "revoke", b.name).returncode == 0
    wait_for(lambda: a.peer_names() == set(), timeout=15, what="withdrawal after revoke")
    state = {s["name"]: s["state"] for s in
             json.loads(plat.cli("systems", "list", "--json").stdout)["systems"]}
    assert state == {a.name: "active", b.name: "revoked"}
    assert "database error" not in plat.log()
