"""A system certificate must fit the handshake (wire.MAX_CERT_SIZE = 1248 bytes, one datagram).
Tags and gateway routes grow it (about 20 routes fit), so the platform refuses a change that
would outgrow it, over the CLI and the admin API, with a reason and nothing written; an
enrolment key whose tags alone are too many fails enrolment the same way (409) instead of
issuing a certificate no handshake could carry. Real `enclave platform serve`, real SQLite."""

from __future__ import annotations

import json
import sqlite3

import pytest

from enclave.agent.enrol import enrol
from enclave.agent.errors import AgentError
from enclave.agent.state import StateDir
from enclave.proto.wire import MAX_CERT_SIZE
from tests.support.admin_api import AdminApi
from tests.support.platform import Platform

pytestmark = pytest.mark.timeout(90)
MANY = [f"10.{i}.0.0/16" for i in range(40)]  # ~2 KB of certificate
FEW = MANY[:8]


def _row(p: Platform, name: str) -> tuple[str, str]:
    with p.db() as db:
        db.row_factory = sqlite3.Row
        r = db.execute("SELECT tags, gateway_routes FROM systems WHERE name = ?",
                       (name,)).fetchone()
        return str(r["tags"]), str(r["gateway_routes"])


def test_changes_that_outgrow_the_handshake_are_refused(platform: Platform,
                                                        tmp_path_factory: pytest.TempPathFactory
                                                        ) -> None:
    p = platform
    token = p.new_token("--unlimited")
    name = enrol(token, StateDir(tmp_path_factory.mktemp("size") / "gw")).name
    api = AdminApi.pinned(p.url, token, p.admin_token)
    before = _row(p, name)

    # CLI: too many routes -> exit status != 0, the reason, nothing written
    res = p.cli("systems", "gateway", name, "--routes", ",".join(MANY))
    assert res.returncode != 0
    assert f"more than the {MAX_CERT_SIZE}" in res.stderr and "bytes" in res.stderr
    assert _row(p, name) == before
    # HTTP: the same
    status, reply = api.call("PUT", f"/v1/admin/systems/{name}/gateway", {"routes": MANY})
    assert status == 400 and f"more than the {MAX_CERT_SIZE}" in reply["error"]
    assert _row(p, name) == before
    # tags: dozens of long ones, CLI and HTTP
    tags = [f"+team-{i:02d}-with-a-rather-long-descriptive-tag-name" for i in range(30)]
    res = p.cli("systems", "tag", name, *tags)
    assert res.returncode != 0 and f"more than the {MAX_CERT_SIZE}" in res.stderr
    status, reply = api.call("POST", f"/v1/admin/systems/{name}/tags", {"changes": tags})
    assert status == 400 and f"more than the {MAX_CERT_SIZE}" in reply["error"]
    assert _row(p, name) == before

    # a change that fits goes through, on both paths
    res = p.cli("systems", "gateway", name, "--routes", ",".join(FEW))
    assert res.returncode == 0, res.stderr
    assert json.loads(_row(p, name)[1]) == FEW
    status, reply = api.call("PUT", f"/v1/admin/systems/{name}/gateway",
                             {"routes": FEW[:4]})
    assert status == 200 and reply["gateway_routes"] == FEW[:4]


def test_enrolment_key_with_too_many_tags_fails_enrolment(platform: Platform,
                                                         tmp_path_factory: pytest.TempPathFactory
                                                         ) -> None:
    p = platform
    tags = ",".join(f"dept-{i:02d}-with-a-rather-long-descriptive-tag-name" for i in range(30))
    token = p.new_token("--unlimited", "--tags", tags)
    systems = p.count("SELECT COUNT(*) FROM systems")
    with pytest.raises(AgentError, match=f"more than the {MAX_CERT_SIZE}"):
        enrol(token, StateDir(tmp_path_factory.mktemp("size") / "tagged"))
    assert p.count("SELECT COUNT(*) FROM systems") == systems
