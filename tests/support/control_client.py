"""The agent's own ControlClient, driven from a test as a (possibly hostile) agent would be.

    state = StateDir(path)                       a system enrolled with the real CLI
    h = Recorder(); c = client(state, h)         ControlClient with that system's key
    task = asyncio.create_task(c.run())          connects, authenticates, reconnects
    c.send({"type": "report", ...})              anything an agent may send
    await until(lambda: h.intros(peer))          what the platform pushed (h.msgs)

    x, y, xname, yname = mutual_pair(plat, tmp)  two systems enrolled, intent both ways
    mx, my = await relay_intros(x, y, xname, yname)   their introductions with relay tickets
    relay_ticket(mx)                             the ticket, bytes
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

from enclave.agent.control import ControlClient
from enclave.agent.state import StateDir
from tests.support.platform import Platform
from tests.support.proc import enclave, local_run
from tests.support.wait import wait_for_async

Msgs = list[dict[str, Any]]


class Recorder:
    """A ControlHandler that keeps every message (and can be told to raise on connect)."""

    def __init__(self) -> None:
        self.msgs: Msgs = []
        self.welcomes = 0
        self.raise_on_connect = 0

    def on_connected(self, welcome: dict[str, Any]) -> None:
        self.welcomes += 1
        if self.raise_on_connect > 0:
            self.raise_on_connect -= 1
            raise RuntimeError("a handler bug")

    def on_message(self, msg: dict[str, Any]) -> None:
        self.msgs.append(msg)

    def on_disconnected(self) -> None:
        pass

    def intros(self, peer: str) -> Msgs:
        return [m for m in self.msgs if m.get("type") == "introduce" and m.get("peer") == peer]


def client(state: StateDir, handler: Recorder) -> ControlClient:
    rec = state.load_enrolment()
    return ControlClient(rec.url, rec.pin, rec.name, state.keystore().load_ed25519(), handler)


until = wait_for_async  # the suite's one async wait (tests/support/wait.py), by its name here


def mutual_pair(plat: Platform, tmp: Path) -> tuple[StateDir, StateDir, str, str]:
    """Systems x and y enrolled on plat (state in tmp/x and tmp/y), each stating intent for
    the other with the real CLI: (x, y, x's name, y's name)."""
    x, y = StateDir(tmp / "x"), StateDir(tmp / "y")
    xname, yname = plat.enrol(x.root), plat.enrol(y.root)
    for a, b in ((x, yname), (y, xname)):
        res = local_run(enclave("intent", "add", b, "--state", str(a.root)))
        assert res.returncode == 0, res.stderr
    return x, y, xname, yname


async def relay_intros(x: StateDir, y: StateDir, xname: str, yname: str,
                       timeout: float = 30.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run x's and y's ControlClients until each has an introduction to the other carrying a
    relay ticket; the latest such introduction of each (x's to y, y's to x)."""
    hx, hy = Recorder(), Recorder()
    tasks = [asyncio.create_task(c.run()) for c in (client(x, hx), client(y, hy))]
    try:
        mx = await until(lambda: [m for m in hx.intros(yname) if m.get("relay_ticket")],
                         timeout=timeout, what="X introduced to Y with a relay ticket")
        my = await until(lambda: [m for m in hy.intros(xname) if m.get("relay_ticket")],
                         timeout=timeout, what="Y introduced to X with a relay ticket")
        return dict(mx[-1]), dict(my[-1])
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def relay_ticket(intro: dict[str, Any]) -> bytes:
    """The relay ticket an introduction carries."""
    return base64.b64decode(str(intro["relay_ticket"]))
