"""Plain tag policies through the admin HTTP API against a real `enclave platform serve` process
(TLS, SQLite), checked against the CLI that shares its validator:

    GET    /v1/admin/policies
    POST   /v1/admin/policies           {"name", "from", "to"}: strings, validated selectors
    DELETE /v1/admin/policies/{name}

A field of the wrong type is a 400 naming it (never turned into text), a malformed name or
selector is a 400 with the CLI's message, a name in use a 409; nothing is stored on any refusal.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from enclave.agent.client import PinnedClient
from enclave.cert.enrolment import EnrolmentToken
from tests.identity.conftest import PlatformProc

pytestmark = pytest.mark.timeout(60)
PATH = "/v1/admin/policies"
GOOD = {"name": "web-db", "from": "tag:web", "to": "tag:db"}


def _call(p: PlatformProc, c: PinnedClient, method: str, path: str, body: Any = None,
          raw: bytes | None = None, token: str | None = None) -> tuple[int, dict[str, Any]]:
    conn = c._connect()
    try:
        headers = {"Authorization": f"Bearer {p.admin_token if token is None else token}"}
        payload = json.dumps(body).encode() if body is not None else raw
        if payload is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _rows(p: PlatformProc) -> list[tuple[Any, ...]]:
    with p.db() as db:
        return [tuple(r) for r in db.execute(
            "SELECT name, from_sel, to_sel, gateway FROM policies ORDER BY name")]


@pytest.fixture(scope="module")
def client(platform: PlatformProc) -> PinnedClient:
    return PinnedClient(platform.url, EnrolmentToken.decode(platform.new_token()).pin)


@pytest.mark.parametrize(("body", "reason"), [
    ({k: v for k, v in GOOD.items() if k != "name"}, "'name' must be a string"),
    ({**GOOD, "name": 123}, "'name' must be a string"),  # once stored as policy "123"
    ({**GOOD, "name": None}, "'name' must be a string"),
    ({**GOOD, "from": ["tag:web"]}, "'from' must be a string"),
    ({**GOOD, "from": True}, "'from' must be a string"),
    ({**GOOD, "to": {"tag": "db"}}, "'to' must be a string"),
    ({k: v for k, v in GOOD.items() if k != "to"}, "'to' must be a string"),
    ({**GOOD, "name": "Web DB"}, "policy name"),
    ({**GOOD, "name": ""}, "policy name"),
    ({**GOOD, "from": "tag:"}, "selector"),
    ({**GOOD, "from": "tag:Web"}, "selector"),
    ({**GOOD, "to": "everyone"}, "selector"),
    ({**GOOD, "to": "name:gw!"}, "selector"),
    ({**GOOD, "to": ""}, "selector"),
])
def test_bad_bodies_refused_nothing_stored(platform: PlatformProc, client: PinnedClient,
                                           body: dict[str, Any], reason: str) -> None:
    before = _rows(platform)
    status, reply = _call(platform, client, "POST", PATH, body)
    assert status == 400 and reason in reply["error"], (body, reply)
    assert _rows(platform) == before


def test_not_json_or_not_an_object(platform: PlatformProc, client: PinnedClient) -> None:
    before = _rows(platform)
    for raw in (b"{not json", b"[1, 2]", b'"web-db"', b""):
        status, reply = _call(platform, client, "POST", PATH, raw=raw)
        assert status == 400 and reply["error"], raw
    assert _call(platform, client, "POST", PATH, GOOD, token="enclave-admin-wrong")[0] == 401
    assert _rows(platform) == before


def test_add_list_conflict_remove(platform: PlatformProc, client: PinnedClient) -> None:
    p, c = platform, client
    status, reply = _call(p, c, "POST", PATH, GOOD)
    assert status == 201 and reply == GOOD
    status, reply = _call(p, c, "POST", PATH, {"name": "any-ops", "from": "*",
                                               "to": "name:AB1CD"})
    assert status == 201, reply
    status, listed = _call(p, c, "GET", PATH)
    assert status == 200
    assert [(x["name"], x["from"], x["to"]) for x in listed["policies"]] == [
        ("any-ops", "*", "name:AB1CD"), ("web-db", "tag:web", "tag:db")]
    assert all(isinstance(x["created_at"], int) for x in listed["policies"])
    before = _rows(p)
    assert before == [("any-ops", "*", "name:AB1CD", None), ("web-db", "tag:web", "tag:db", None)]
    status, reply = _call(p, c, "POST", PATH, {**GOOD, "from": "*"})  # name in use
    assert status == 409 and "exists" in reply["error"]
    assert _rows(p) == before
    assert _call(p, c, "DELETE", f"{PATH}/web-db") == (200, {"removed": "web-db"})
    assert _call(p, c, "DELETE", f"{PATH}/web-db")[0] == 404
    assert _call(p, c, "DELETE", f"{PATH}/any-ops")[0] == 200
    assert _rows(p) == []


def test_cli_refuses_what_the_api_refuses(platform: PlatformProc, client: PinnedClient) -> None:
    """One validator: the CLI's error line is the API's error message."""
    before = _rows(platform)
    for name, from_sel, to_sel in (("Web DB", "tag:web", "tag:db"), ("x", "tag:", "tag:db"),
                                   ("x", "tag:web", "everyone")):
        res = platform.cli("platform", "policy", "add", "--name", name, "--from", from_sel,
                           "--to", to_sel)
        status, reply = _call(platform, client, "POST", PATH,
                              {"name": name, "from": from_sel, "to": to_sel})
        assert res.returncode == 1 and status == 400, (res.stderr, reply)
        assert res.stderr.strip() == f"error: {reply['error']}", (res.stderr, reply)
    assert _rows(platform) == before
