"""The nodes table (enclave.platform.nodes) on both backends: a node's row written at start,
refreshed by its heartbeat, deleted at a clean stop; alive/stale by the presence TTL; rows stale
for longer than a day pruned by a live node's heartbeat; `enclave platform nodes [--json]` from
a real store."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from enclave import __version__
from enclave.platform.cli import main as platform_main
from enclave.platform.nodes import (
    PRUNE_AFTER,
    Node,
    beat,
    list_nodes,
    node_url,
    register,
    remove,
    start_node,
    this_node,
)
from enclave.platform.presence import PRESENCE_TTL
from tests.support.store import SyncStore

T0 = 1_800_000_000


def _node(node_id: str, started: int, **kw: object) -> Node:
    fields: dict[str, object] = {
        "listen": "198.18.0.10:8443", "url": "https://198.18.0.10:8443", "host": "plat1",
        "pid": 4242, "version": "0.1.0", "started_at": started, "seen_at": started}
    fields.update(kw)
    return Node(node_id, **fields)  # type: ignore[arg-type]


def _ids(store: SyncStore) -> list[str]:
    return [n.id for n in store.run(list_nodes(store.store))]


def test_a_node_row_lives_from_start_to_clean_stop(store_location: str | Path) -> None:
    store = SyncStore(store_location)
    one, two = _node("plat1-aaaa", T0), _node("plat2-bbbb", T0 + 1, listen="198.18.0.11:8443",
                                                 url=None, host="plat2", pid=7)
    store.run(register(store.store, two))
    store.run(register(store.store, one))
    assert store.run(list_nodes(store.store)) == [one, two]  # the oldest node first
    store.run(beat(store.store, one, T0 + 5, 3))
    rows = {n.id: n for n in store.run(list_nodes(store.store))}
    assert rows["plat1-aaaa"].seen_at == T0 + 5 and rows["plat1-aaaa"].agents == 3
    assert rows["plat1-aaaa"].started_at == T0  # the heartbeat touches only seen_at and agents
    assert rows["plat2-bbbb"] == two and two.url is None
    store.run(remove(store.store, "plat1-aaaa"))
    assert _ids(store) == ["plat2-bbbb"]


def test_stale_after_the_presence_ttl(store_location: str | Path) -> None:
    store = SyncStore(store_location)
    store.run(register(store.store, _node("plat1-aaaa", T0)))
    store.run(beat(store.store, _node("plat1-aaaa", T0), T0 + 10, 1))
    (row,) = store.run(list_nodes(store.store))
    assert row.state(T0 + 10 + PRESENCE_TTL) == "alive"
    assert row.state(T0 + 10 + PRESENCE_TTL + 1) == "stale"
    assert row.state(T0 + 15, ttl=4) == "stale"
    shown = row.as_json(T0 + 40)
    assert shown["state"] == "stale" and shown["seen_ago"] == 30 and shown["agents"] == 1


def test_a_live_heartbeat_prunes_rows_stale_for_a_day(store_location: str | Path) -> None:
    store = SyncStore(store_location)
    live = _node("live-1111", T0)
    store.run(register(store.store, live))
    store.run(register(store.store, _node("dead-2222", T0)))  # died at T0
    store.run(register(store.store, _node("dead-3333", T0 + 100)))  # died later
    now = T0 + PRESENCE_TTL + PRUNE_AFTER  # dead-2222 stale for exactly a day: kept
    store.run(beat(store.store, live, now, 0))
    assert _ids(store) == ["dead-2222", "live-1111", "dead-3333"]  # by start, then id
    store.run(beat(store.store, live, now + 1, 0))  # now stale for more than a day
    assert _ids(store) == ["live-1111", "dead-3333"]


def test_a_heartbeat_puts_back_a_row_that_is_gone(store_location: str | Path) -> None:
    """A node cut off from the database for a day (pruned by another node) is listed again at
    its next heartbeat."""
    store = SyncStore(store_location)
    node = _node("plat1-aaaa", T0)
    store.run(beat(store.store, node, T0 + 5, 2))
    (row,) = store.run(list_nodes(store.store))
    assert row == _node("plat1-aaaa", T0, seen_at=T0 + 5, agents=2)


def test_this_node_and_its_url() -> None:
    urls = ("https://198.18.0.10:8443", "https://198.18.0.11:8443")
    assert node_url(urls, ("198.18.0.11", 8443)) == urls[1]
    assert node_url(urls, ("198.18.0.11", 9443)) is None  # another port
    assert node_url(urls, ("0.0.0.0", 8443)) is None  # which of the two: not known
    assert node_url(urls[:1], ("0.0.0.0", 8443)) == urls[0]  # a one-URL platform
    named = ("https://cp1.example:8443", "https://cp2.example:8443")
    assert node_url(named, ("198.51.100.2", 8443), {"cp1.example": {"198.51.100.1"},
                                                     "cp2.example": {"198.51.100.2"}}) == named[1]
    me = this_node("n-1", ("::1", 8443), None, T0)
    assert me.listen == "[::1]:8443" and me.version == __version__ and me.pid > 0
    assert me.started_at == me.seen_at == T0 and me.agents == 0


def _cli_store(store_location: str | Path, tmp_path: Path) -> tuple[SyncStore, list[str]]:
    """A store the CLI opens: SQLite in --data, or PostgreSQL through --db."""
    if isinstance(store_location, Path):
        return SyncStore(tmp_path / "platform.db"), ["--data", str(tmp_path)]
    store = SyncStore(store_location)
    store.set_meta({"org": "acme"})
    return store, ["--data", str(tmp_path / "data"), "--db", store_location]


def test_platform_nodes_command(store_location: str | Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    store, where = _cli_store(store_location, tmp_path)
    assert platform_main(["platform", "nodes", *where]) == 0
    assert capsys.readouterr().out.split() == ["ID", "LISTEN", "URL", "HOST", "PID", "VERSION",
                                               "STARTED", "LAST", "SEEN", "AGENTS", "STATE"]
    store.run(register(store.store, _node("dead-2222", 1_000, url=None)))  # long stale
    alive = replace(this_node("plat1-aaaa", ("198.18.0.10", 8443), "https://198.18.0.10:8443",
                              2_000_000_000), agents=5)  # seen in the future: alive now
    store.run(register(store.store, alive))
    assert platform_main(["platform", "nodes", "--json", *where]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["stale_after"] == PRESENCE_TTL
    assert [(n["id"], n["state"], n["agents"], n["url"]) for n in shown["nodes"]] == [
        ("dead-2222", "stale", 0, None), ("plat1-aaaa", "alive", 5, "https://198.18.0.10:8443")]
    assert shown["nodes"][1]["pid"] == alive.pid and shown["nodes"][1]["seen_ago"] == 0
    assert platform_main(["platform", "nodes", *where]) == 0
    header, dead, live = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["ID", "LISTEN", "URL"]
    assert dead.split()[0] == "dead-2222" and dead.split()[2] == "-"
    assert dead.split()[-1] == "stale" and "1970-01-01 00:16:40Z" in dead
    assert live.split() == ["plat1-aaaa", "198.18.0.10:8443", "https://198.18.0.10:8443",
                            alive.host, str(alive.pid), __version__, "2033-05-18", "03:33:20Z",
                            "0s", "ago", "5", "alive"]
    assert dead.index("stale") == live.index("alive")  # one column, aligned
    with pytest.raises(SystemExit):  # argparse: a clear usage error
        platform_main(["platform", "nodes", "--stale-after", "0", *where])
    assert "seconds >= 1" in capsys.readouterr().err


def test_a_starting_node_finds_its_url_by_name(store_location: str | Path) -> None:
    """Its --listen address is what a URL's host name resolves to (here: localhost)."""
    store = SyncStore(store_location)
    urls = ("https://198.18.0.10:8443", "https://localhost:8443")
    node = store.run(start_node(store.store, "n-1", ("127.0.0.1", 8443), urls, T0))
    assert node.url == urls[1] and node.listen == "127.0.0.1:8443"
    assert store.run(list_nodes(store.store)) == [node]
    assert store.run(start_node(store.store, "n-2", ("127.0.0.1", 9), urls, T0)).url is None
