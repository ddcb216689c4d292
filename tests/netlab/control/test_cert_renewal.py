"""A running agent renews its certificate by itself: real platform, real `enclave up`.

The enrolment key issues 60 s certificates (the platform's minimum); the CA backdates notBefore
by a minute, so renewal is due 2/3 * 120 s = 20 s after issue, and the daemon's timer wakes then.
`enclave status --json` must show a new serial and a later expiry without a restart, and the
renewed agent keeps (or regains) its authenticated control channel.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from enclave.agent.state import StateDir
from tests.support.agent import AgentProc
from tests.support.platform import Platform
from tests.support.wait import wait_for


def test_running_agent_renews_short_lived_cert(tmp_path: Path) -> None:
    plat = Platform.loopback(tmp_path)
    agent = AgentProc.local(tmp_path, "agent")
    try:
        agent.enrol(plat.token("--cert-lifetime", "60s"))
        agent.up()
        pid = agent.proc.pid if agent.proc else None
        first = agent.status()
        expires = datetime.datetime.fromisoformat(first["cert_expires"])
        assert expires - datetime.datetime.now(datetime.UTC) < datetime.timedelta(seconds=61)

        renewed = wait_for(lambda: (s := agent.status())["cert_serial"] != first["cert_serial"]
                           and s, timeout=40, interval=0.5, what="automatic renewal")
        assert datetime.datetime.fromisoformat(renewed["cert_expires"]) > expires
        assert agent.proc is not None and agent.proc.pid == pid and agent.proc.poll() is None
        assert "certificate renewed" in agent.log()
        assert f"issued certificate {renewed['cert_serial']} to {agent.name} (renew)" in plat.log()
        # the state dir holds the new certificate too (a restart would present it)
        assert StateDir(agent.state).load_certificate().serial_number == renewed["cert_serial"]
        wait_for(lambda: agent.status()["platform"]["state"] == "connected",
                 what="control channel after renewal")
    finally:
        agent.down()
        plat.stop()
