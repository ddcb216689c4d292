"""A busy database does not lock agents out (audit 1eeaf5c finding 3): while another process
holds the SQLite store's write lock far longer than the store's busy timeout (an admin command
stuck, a full disk refusing writes), a real agent still authenticates its control channel and
the platform keeps answering (the old server wrote last_seen on every WebSocket authentication,
on the event loop, with a 10 s busy wait, and refused the reconnect when the write failed)."""

from __future__ import annotations

import json
import sqlite3
import ssl
import time
import urllib.request
from pathlib import Path

from enclave.platform.store.sqlite import BUSY_TIMEOUT
from tests.support.agent import AgentProc
from tests.support.platform import Platform
from tests.support.wait import wait_for


def test_agent_connects_while_the_store_is_write_locked(tmp_path: Path) -> None:
    plat = Platform.loopback(tmp_path)
    agent = AgentProc.local(tmp_path, "busy")
    lock = sqlite3.connect(plat.data / "platform.db", isolation_level=None)
    try:
        agent.enrol(plat.token())
        lock.execute("BEGIN IMMEDIATE")  # from here on no write can commit
        locked_at = time.monotonic()
        agent.up()
        wait_for(lambda: agent.status()["platform"]["state"] == "connected", 20,
                 what="control channel while the store is write-locked")
        # past the store's busy timeout: writes fail now, and still nothing is refused
        time.sleep(max(0.0, locked_at + BUSY_TIMEOUT + 1.0 - time.monotonic()))
        assert agent.status()["platform"]["state"] == "connected"
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with urllib.request.urlopen(f"{plat.url}/v1/ca", context=ctx, timeout=10) as reply:
            assert reply.status == 200  # the public API answers (reads are not held up)
        listed = json.loads(plat.cli("systems", "list", "--json").stdout)["systems"]
        assert [s["name"] for s in listed] == [agent.name]  # admin reads work too
        assert "Traceback" not in plat.log()
    finally:
        lock.close()
        agent.down()
        plat.stop()
