"""Removing a system by admin, end to end: a real platform process, real `enclave up` agents.

`a` holds mutual intent with `b` and with `c`; both pairs are introduced. `b` is removed with the
CLI (`enclave platform systems remove`, another process: the hub notices the commit), `c` with the
admin HTTP API (DELETE /v1/admin/systems/NAME, in-process). Each time `a` is told (withdrawal,
reason "revoked"), receives the CRL with the removed certificate, its intent list loses the removed
name, the removed agent is cut off, and no intent row naming the removed system is left: the same
path the ephemeral reaper takes (test_ephemeral_reap.py; store-level: tests/unit/platform/
test_store_removal.py).
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.admin_api import AdminApi
from tests.support.agent import AgentProc, loopback_agents
from tests.support.platform import Platform
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Platform, AdminApi, list[AgentProc]]]:
    with loopback_agents(tmp_path_factory.mktemp("rm"), ["a", "b", "c"],
                         ENCLAVE_PLATFORM_RELAY="off") as (plat, agents):
        yield plat, AdminApi.pinned(plat.url, plat.token(), plat.admin_token), [*agents.values()]


def _intents_naming(plat: Platform, name: str) -> int:
    db = sqlite3.connect(plat.data / "platform.db", timeout=10)
    try:
        return int(db.execute("SELECT COUNT(*) FROM intents WHERE from_name = ? OR to_name = ?",
                              (name, name)).fetchone()[0])
    finally:
        db.close()


def test_admin_removal_withdraws_and_drops_intents(
        world: tuple[Platform, AdminApi, list[AgentProc]]) -> None:
    plat, api, (a, b, c) = world
    for other in (b, c):
        a.intent("add", other.name)
        other.intent("add", a.name)
    wait_for(lambda: a.peer_names() == {b.name, c.name}, timeout=15, what="introductions")
    assert a.status()["intents"] == sorted((b.name, c.name))

    for gone, how in ((b, "cli"), (c, "http")):
        serial = gone.status()["cert_serial"]
        assert _intents_naming(plat, gone.name) == 2
        if how == "cli":
            res = plat.cli("systems", "remove", gone.name)
            assert res.returncode == 0, res.stderr
        else:
            path = f"/v1/admin/systems/{urllib.parse.quote(gone.name)}"
            assert api.call("DELETE", path, token="enclave-admin-wrong")[0] == 401
            assert _intents_naming(plat, gone.name) == 2  # refused: nothing changed
            assert api.call("DELETE", path) == (200, {"removed": gone.name})
            assert api.call("DELETE", path)[0] == 404
        assert _intents_naming(plat, gone.name) == 0

        def told(st: dict[str, Any], g: AgentProc = gone, s: int = serial) -> bool:
            # withdrawn (reason "revoked"), the CRL carries its serial, the intent list lost it
            reasons = [w["reason"] for w in st["withdrawals"] if w["peer"] == g.name]
            return (reasons[-1:] == ["revoked"] and s in st["revoked_serials"]
                    and g.name not in st["intents"])

        wait_for(lambda: told(a.status()), timeout=10, what=f"a told of the removal ({how})")
        wait_for(lambda g=gone: g.status()["platform"]["state"] != "connected",
                 what=f"removed agent cut off ({how})")
    assert a.status()["intents"] == [] and a.peer_names() == set()
    # the name is retired: a removed system's identity cannot renew
    assert b.cmd("renew", "--force").returncode != 0
