"""Candidates are addresses, never names, with the platform where it runs in production: on a
public host, agents behind NAT (so nobody is on the platform's host and loopback means nothing).

    plat (public host): enclave platform serve
    fc1 (behind a full-cone NAT): two systems' ControlClients (tests.support.control_client),
        X reports a hostname, loopback, link-local and one real address; Y records what the
        platform tells it about X
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from enclave.agent.state import StateDir
from enclave.netlab import Lab, NatType, Site, Topology
from tests.support.control_client import Recorder, client, until
from tests.support.lab import Agent, intents_both_ways, platform_lab
from tests.support.platform import Platform

World = tuple[Lab, Platform, dict[str, Agent]]


@pytest.fixture(scope="module")
def world(netlab_required: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    topo = Topology(sites=[Site("fc", nat=NatType.FULL_CONE, hosts=2)], public_hosts=["plat"])
    with platform_lab(topo, tmp_path_factory.mktemp("cand"), ("fc1", "fc2")) as w:
        yield w


def _cand(host: str, port: int = 51820) -> dict[str, Any]:
    return {"transport": "udp", "host": host, "port": port, "kind": "public", "nat": "none"}


def test_only_addresses_reach_the_peer(world: World) -> None:
    lab, _plat, agents = world
    x, y = agents["fc1"], agents["fc2"]
    intents_both_ways(x, y)
    sx, sy = StateDir(Path(x.state)), StateDir(Path(y.state))

    async def scenario() -> list[dict[str, Any]]:
        hx, hy = Recorder(), Recorder()
        cx, cy = client(sx, hx), client(sy, hy)
        tasks = [asyncio.create_task(c.run()) for c in (cx, cy)]
        try:
            await until(lambda: cx.state == "connected" and cy.state == "connected", 20,
                        what="both control channels")
            await until(lambda: hy.intros(x.name), 10, what="y introduced to x")
            assert cx.send({"type": "report", "nat": "none", "mappings": {}, "candidates": [
                _cand("evil.example"), _cand("127.0.0.1"), _cand("::1"), _cand("169.254.1.1"),
                _cand("198.18.5.5")]})
            got = await until(lambda: [m for m in hy.intros(x.name) if m["candidates"]], 10,
                              what="x's candidates at y")
            await asyncio.sleep(1.5)
            return [*got, *hy.msgs]
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # the clients run inside fc1's namespace (behind its NAT), as an agent there would
    msgs = lab.host("fc1").call(lambda: asyncio.run(asyncio.wait_for(scenario(), 60)), 90)
    intro = msgs[0]
    assert [c["host"] for c in intro["candidates"]] == ["198.18.5.5"]
    text = json.dumps(msgs)
    for refused in ("evil.example", "127.0.0.1", '"::1"', "169.254.1.1"):
        assert refused not in text, refused
