"""Plain tag policies through the admin HTTP API against a real `enclave platform serve` process
(TLS, SQLite), checked against the CLI that shares its validator:

    GET    /v1/admin/policies
    POST   /v1/admin/policies           {"name", "from", "to"}: strings, validated selectors
    DELETE /v1/admin/policies/{name}

A field of the wrong type is a 400 naming it (never turned into text), a malformed name or
selector is a 400 with the CLI's message, a name in use a 409; nothing is stored on any refusal.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.admin_api import AdminApi, policy_rows
from tests.support.platform import Platform

pytestmark = pytest.mark.timeout(60)
PATH = "/v1/admin/policies"
GOOD = {"name": "web-db", "from": "tag:web", "to": "tag:db"}
COLUMNS = ("name", "from_sel", "to_sel", "gateway")


@pytest.fixture(scope="module")
def api(platform: Platform) -> AdminApi:
    return AdminApi.pinned(platform.url, platform.new_token(), platform.admin_token)


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
def test_bad_bodies_refused_nothing_stored(platform: Platform, api: AdminApi,
                                           body: dict[str, Any], reason: str) -> None:
    before = policy_rows(platform, COLUMNS)
    status, reply = api.call("POST", PATH, body)
    assert status == 400 and reason in reply["error"], (body, reply)
    assert policy_rows(platform, COLUMNS) == before


def test_not_json_or_not_an_object(platform: Platform, api: AdminApi) -> None:
    before = policy_rows(platform, COLUMNS)
    for raw in (b"{not json", b"[1, 2]", b'"web-db"', b""):
        status, reply = api.call("POST", PATH, raw=raw)
        assert status == 400 and reply["error"], raw
    assert api.call("POST", PATH, GOOD, token="enclave-admin-wrong")[0] == 401
    assert policy_rows(platform, COLUMNS) == before


def test_add_list_conflict_remove(platform: Platform, api: AdminApi) -> None:
    p = platform
    status, reply = api.call("POST", PATH, GOOD)
    assert status == 201 and reply == GOOD
    status, reply = api.call("POST", PATH, {"name": "any-ops", "from": "*", "to": "name:AB1CD"})
    assert status == 201, reply
    status, listed = api.call("GET", PATH)
    assert status == 200
    assert [(x["name"], x["from"], x["to"]) for x in listed["policies"]] == [
        ("any-ops", "*", "name:AB1CD"), ("web-db", "tag:web", "tag:db")]
    assert all(isinstance(x["created_at"], int) for x in listed["policies"])
    before = policy_rows(p, COLUMNS)
    assert before == [("any-ops", "*", "name:AB1CD", None), ("web-db", "tag:web", "tag:db", None)]
    status, reply = api.call("POST", PATH, {**GOOD, "from": "*"})  # name in use
    assert status == 409 and "exists" in reply["error"]
    assert policy_rows(p, COLUMNS) == before
    assert api.call("DELETE", f"{PATH}/web-db") == (200, {"removed": "web-db"})
    assert api.call("DELETE", f"{PATH}/web-db")[0] == 404
    assert api.call("DELETE", f"{PATH}/any-ops")[0] == 200
    assert policy_rows(p, COLUMNS) == []


def test_cli_refuses_what_the_api_refuses(platform: Platform, api: AdminApi) -> None:
    """One validator: the CLI's error line is the API's error message."""
    before = policy_rows(platform, COLUMNS)
    for name, from_sel, to_sel in (("Web DB", "tag:web", "tag:db"), ("x", "tag:", "tag:db"),
                                   ("x", "tag:web", "everyone")):
        res = platform.cli("policy", "add", "--name", name, "--from", from_sel,
                           "--to", to_sel)
        status, reply = api.call("POST", PATH, {"name": name, "from": from_sel, "to": to_sel})
        assert res.returncode == 1 and status == 400, (res.stderr, reply)
        assert res.stderr.strip() == f"error: {reply['error']}", (res.stderr, reply)
    assert policy_rows(platform, COLUMNS) == before
