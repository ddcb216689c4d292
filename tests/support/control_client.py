"""The agent's own ControlClient, driven from a test as a (possibly hostile) agent would be.

    state = StateDir(path)                       a system enrolled with the real CLI
    h = Recorder(); c = client(state, h)         ControlClient with that system's key
    task = asyncio.create_task(c.run())          connects, authenticates, reconnects
    c.send({"type": "report", ...})              anything an agent may send
    await until(lambda: h.intros(peer))          what the platform pushed (h.msgs)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from enclave.agent.control import ControlClient
from enclave.agent.state import StateDir

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


async def until(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
