"""Ephemeral systems are reaped after a grace offline: real platform process, real agents.

Two agents hold mutual intents and are introduced; the ephemeral one stops; after
ENCLAVE_PLATFORM_EPHEMERAL_GRACE it is gone from `systems list`, its certificate is on the
CRL the survivor receives, its intents and the survivor's intent for it are deleted (the
survivor's intent list shrinks; same path as `systems remove`, test_system_removal.py), and a
non-ephemeral one (offline) stays.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from enclave.platform.hub import FULL_TICK
from tests.support.agent import AgentProc
from tests.support.platform import Platform
from tests.support.wait import wait_for

GRACE = 12  # well more than an agent needs from enrolment to its control channel, also
#              on a loaded machine (else it is reaped before it ever connects)


def _systems(plat: Platform) -> dict[str, dict[str, object]]:
    res = plat.cli("systems", "list", "--json")
    assert res.returncode == 0, res.stderr
    return {s["name"]: s for s in json.loads(res.stdout)["systems"]}


def test_ephemeral_system_reaped_after_grace(tmp_path: Path) -> None:
    plat = Platform.loopback(tmp_path, ENCLAVE_PLATFORM_EPHEMERAL_GRACE=str(GRACE))
    eph, keep, stay = (AgentProc.local(tmp_path, role) for role in ("eph", "keep", "stay"))
    try:
        token = plat.token()
        keep.enrol(token)
        stay.enrol(token)
        eph.enrol(plat.token("--ephemeral"))  # last: the grace runs from its enrolment
        systems = _systems(plat)
        assert systems[eph.name]["ephemeral"] is True
        assert systems[keep.name]["ephemeral"] is False
        for a in (eph, keep):
            a.up()
            wait_for(lambda a=a: a.status()["platform"]["state"] == "connected",
                     timeout=GRACE, what=f"{a.name} connected")
            if a is eph:
                online_at = time.monotonic()
        eph.intent("add", keep.name)
        keep.intent("add", eph.name)
        wait_for(lambda: keep.peer_names() == {eph.name}, what="introduction")
        assert keep.status()["intents"] == [eph.name]
        serial = eph.status()["cert_serial"]

        # online for longer than the grace plus a full hub pass: online systems are never reaped
        time.sleep(max(0.0, online_at + GRACE + FULL_TICK + 0.5 - time.monotonic()))
        assert eph.name in _systems(plat)

        assert eph.down() == 0  # `stay` (non-ephemeral) never connected: offline even longer
        wait_for(lambda: eph.name not in _systems(plat), timeout=GRACE + 15,
                 what="ephemeral system reaped")
        assert "removed ephemeral system " + eph.name in plat.log()
        # peers notified: the survivor lost the introduction and got the CRL with the serial
        wait_for(lambda: keep.peer_names() == set(), what="withdrawal")
        wait_for(lambda: serial in keep.status()["revoked_serials"], what="CRL with the serial")
        wait_for(lambda: keep.status()["intents"] == [], what="intent list without it")
        systems = _systems(plat)
        assert keep.name in systems and stay.name in systems
        db = sqlite3.connect(plat.data / "platform.db")
        try:
            assert db.execute("SELECT COUNT(*) FROM intents WHERE from_name = ? "
                              "OR to_name = ?", (eph.name, eph.name)).fetchone()[0] == 0
            assert db.execute("SELECT revoke_reason FROM certificates WHERE serial = ?",
                              (serial,)).fetchone()[0] == "cessation"
        finally:
            db.close()
        # the removed system's identity no longer works
        res = eph.cmd("renew", "--force")
        assert res.returncode != 0
    finally:
        for a in (eph, keep, stay):
            a.down()
        plat.stop()
