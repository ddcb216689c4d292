"""Gateway policies through the admin HTTP API against a real `enclave platform serve` process
(TLS, SQLite), checked against the CLI that shares its validator:

    POST   /v1/admin/gateway-policies          {"name", "from", "gateway", "routes", "acl"}
    DELETE /v1/admin/gateway-policies/{name}

Bad input is a 4xx JSON error with a reason and leaves the policies table as it was; the CLI
refuses the same input with the same message; a policy made by either is seen and removable by
the other.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from enclave.agent.enrol import enrol
from enclave.agent.state import StateDir
from tests.support.admin_api import AdminApi, policy_rows
from tests.support.platform import Platform

pytestmark = pytest.mark.timeout(60)
PATH = "/v1/admin/gateway-policies"
LAN = "198.19.5.0/24"


@pytest.fixture(scope="module")
def world(platform: Platform, tmp_path_factory: pytest.TempPathFactory
          ) -> tuple[Platform, AdminApi, str, str]:
    token = platform.new_token("--unlimited")
    tmp = tmp_path_factory.mktemp("gwpol")
    gw = enrol(token, StateDir(tmp / "gw")).name
    ops = enrol(token, StateDir(tmp / "ops")).name
    return platform, AdminApi.pinned(platform.url, token, platform.admin_token), gw, ops


def test_post_and_delete_gateway_policies(world: tuple[Platform, AdminApi, str, str]
                                          ) -> None:
    p, api, gw, ops = world
    good = {"name": "ops-lan", "from": f"name:{ops}", "gateway": gw, "routes": [LAN],
            "acl": ["tcp:22", "icmp"]}

    for bad_token in ("", "enclave-admin-wrong"):
        for method, path, body in (("POST", PATH, good), ("DELETE", f"{PATH}/ops-lan", None)):
            status, reply = api.call(method, path, body, token=bad_token)
            assert status == 401 and "admin token" in reply["error"], (method, bad_token)

    bad_bodies: list[tuple[dict[str, Any], str]] = [
        ({k: v for k, v in good.items() if k != "name"}, "'name' must be a string"),
        ({**good, "from": 7}, "'from' must be a string"),
        ({**good, "gateway": None}, "'gateway' must be a string"),
        ({**good, "routes": LAN}, "'routes' must be a list"),
        ({**good, "routes": [LAN, 7]}, "'routes' must be a list"),
        ({**good, "routes": []}, "needs routes"),
        ({**good, "routes": ["0.0.0.0/0"]}, "default route"),
        ({**good, "routes": ["198.19.5.1/24"]}, "host bits"),
        ({**good, "routes": ["127.0.0.0/8"]}, "not a routable"),
        ({**good, "routes": ["not-a-subnet"]}, "bad route"),
        ({**good, "acl": "tcp:22"}, "'acl' must be a list"),
        ({**good, "acl": ["ftp:21"]}, "must be tcp:PORT"),
        ({**good, "acl": ["tcp:0"]}, "ports must be 1..65535"),
        ({**good, "acl": ["tcp:22-21"]}, "ports must be 1..65535"),
        ({**good, "acl": ["tcp:22,udp:53"]}, "bad port"),
        ({**good, "acl": [f"tcp:{n}" for n in range(1, 40)]}, "at most"),
        ({**good, "name": "Ops LAN"}, "policy name"),
        ({**good, "from": "tag:"}, "selector"),
        ({**good, "from": "everyone"}, "selector"),
        ({**good, "gateway": "gw!"}, "not a system name"),
    ]
    for body, reason in bad_bodies:
        status, reply = api.call("POST", PATH, body)
        assert status == 400 and reason in reply["error"], (body, reply)
    for raw in (b"{not json", b"[1, 2]"):
        assert api.call("POST", PATH, raw=raw)[0] == 400
    status, reply = api.call("POST", PATH, {**good, "gateway": "ZZZZZ"})
    assert status == 404 and "ZZZZZ" in reply["error"]
    assert policy_rows(p) == []  # nothing half-written by any refusal

    # accepted: normalised like the CLI (sorted, de-duplicated routes; ACL entries lower-cased)
    status, reply = api.call("POST", PATH, {**good, "routes": [LAN, "10.9.0.0/16", LAN],
                                            "acl": ["TCP:22", "icmp", "tcp:22"]})
    assert status == 201, reply
    assert {k: v for k, v in reply.items() if k != "created_at"} == {
        "name": "ops-lan", "from": f"name:{ops}", "gateway": gw,
        "routes": ["10.9.0.0/16", LAN], "acl": ["icmp", "tcp:22"]}
    assert isinstance(reply["created_at"], int)
    status, listed = api.call("GET", PATH)
    assert status == 200 and listed["policies"] == [reply]
    # also a tag policy towards the gateway (mutual intent introduces the pair)
    assert policy_rows(p) == [("ops-lan", f"name:{ops}", f"name:{gw}", gw,
                               json.dumps(["10.9.0.0/16", LAN]), json.dumps(["icmp", "tcp:22"]))]
    # no ACL given: any
    status, reply = api.call("POST", PATH, {**good, "name": "all-lan", "from": "*", "acl": None})
    assert status == 201 and reply["acl"] == ["any"]

    # a name in use (gateway policy or plain tag policy) is a 409 and changes nothing
    res = p.cli("policy", "add", "--name", "web-db", "--from", "tag:web",
                "--to", "tag:db")
    assert res.returncode == 0, res.stderr
    before = policy_rows(p)
    for name in ("ops-lan", "web-db"):
        status, reply = api.call("POST", PATH, {**good, "name": name})
        assert status == 409 and "exists" in reply["error"], name
    assert policy_rows(p) == before

    # DELETE: only gateway policies; unknown -> 404
    status, reply = api.call("DELETE", f"{PATH}/web-db")
    assert status == 404 and "no gateway policy" in reply["error"]
    assert api.call("DELETE", f"{PATH}/nope")[0] == 404
    assert policy_rows(p) == before
    assert api.call("DELETE", f"{PATH}/all-lan") == (200, {"removed": "all-lan"})
    assert api.call("DELETE", f"{PATH}/all-lan")[0] == 404
    assert [r[0] for r in policy_rows(p)] == ["ops-lan", "web-db"]

    # the CLI sees the API's policy and can remove it; the API removes the CLI's
    res = p.cli("policy", "list", "--json")
    assert res.returncode == 0, res.stderr
    assert {x["name"]: x["to"] for x in json.loads(res.stdout)["policies"]} == {
        "ops-lan": f"name:{gw}", "web-db": "tag:db"}
    res = p.cli("policy", "remove", "ops-lan")
    assert res.returncode == 0, res.stderr
    res = p.cli("policy", "add", "--name", "cli-lan", "--from", "tag:ops",
                "--gateway", gw, "--routes", LAN, "--acl", "udp:53")
    assert res.returncode == 0, res.stderr
    status, listed = api.call("GET", PATH)
    assert [(x["name"], x["acl"]) for x in listed["policies"]] == [("cli-lan", ["udp:53"])]
    assert api.call("DELETE", f"{PATH}/cli-lan") == (200, {"removed": "cli-lan"})
    assert [r[0] for r in policy_rows(p)] == ["web-db"]


def test_cli_refuses_what_the_api_refuses(world: tuple[Platform, AdminApi, str, str]
                                          ) -> None:
    """One validator: the CLI's error line is the API's error message."""
    p, api, gw, _ops = world
    cases: list[tuple[str, list[str], dict[str, Any]]] = [  # gateway, CLI args, API fields
        (gw, ["--routes", "0.0.0.0/0"], {"routes": ["0.0.0.0/0"]}),
        (gw, ["--routes", LAN, "--acl", "tcp:99999"], {"routes": [LAN], "acl": ["tcp:99999"]}),
        ("ZZZZZ", ["--routes", LAN], {"routes": [LAN]}),  # unknown gateway: 404
        ("gw!", ["--routes", LAN], {"routes": [LAN]}),
    ]
    before = policy_rows(p)
    for gateway, cli_args, api_fields in cases:
        res = p.cli("policy", "add", "--name", "x-lan", "--from", "tag:ops",
                    "--gateway", gateway, *cli_args)
        body = {"name": "x-lan", "from": "tag:ops", "gateway": gateway, **api_fields}
        status, reply = api.call("POST", PATH, body)
        assert res.returncode == 1 and status in (400, 404), (res.stderr, reply)
        assert res.stderr.strip() == f"error: {reply['error']}", (res.stderr, reply)
    assert policy_rows(p) == before


def test_removing_a_gateway_deletes_its_policies(
        world: tuple[Platform, AdminApi, str, str],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """DELETE /v1/admin/systems/NAME and `systems remove` take the removed system's gateway
    policies with it (one transaction, Store._forget); other gateways' policies and plain tag
    policies stay. Clearing the gateway role first keeps them."""
    p, api, _gw, ops = world
    token = p.new_token("--unlimited")
    tmp = tmp_path_factory.mktemp("gwrm")
    gw2, gw3 = (enrol(token, StateDir(tmp / n)).name for n in ("gw2", "gw3"))
    before = {r[0] for r in policy_rows(p)}
    for name, gateway, from_sel in (("gw2-a", gw2, f"name:{ops}"), ("gw2-b", gw2, "*"),
                                    ("gw3-a", gw3, f"name:{gw2}")):
        status, reply = api.call("POST", PATH, {"name": name, "from": from_sel,
                                                "gateway": gateway, "routes": [LAN]})
        assert status == 201, reply
    status, reply = api.call("POST", "/v1/admin/policies",
                             {"name": "to-gw2", "from": "tag:ops", "to": f"name:{gw2}"})
    assert status == 201, reply
    with p.db() as db:  # a counter-signed policy intent (as an agent would store it)
        db.execute("INSERT INTO intents (from_name, to_name, statement, signature, issued_at, "
                   "policy) VALUES (?, ?, x'00', x'00', 1, 'gw2-a')", (ops, gw2))

    # clearing the role keeps the policies (they offer no routes until it serves routes again)
    gw_path = f"/v1/admin/systems/{gw2}/gateway"
    assert api.call("PUT", gw_path, {"routes": [LAN]})[0] == 200
    status, reply = api.call("DELETE", gw_path)
    assert status == 200 and reply["gateway_routes"] == []
    assert {r[0] for r in policy_rows(p)} - before == {"gw2-a", "gw2-b", "gw3-a", "to-gw2"}

    # removal over HTTP: gw2's gateway policies (and their intents) go, the rest stays
    assert api.call("DELETE", f"/v1/admin/systems/{gw2}") == (200, {"removed": gw2})
    assert {r[0] for r in policy_rows(p)} - before == {"gw3-a", "to-gw2"}
    assert p.count("SELECT COUNT(*) FROM intents WHERE policy = 'gw2-a'") == 0
    status, listed = api.call("GET", PATH)
    assert status == 200 and {x["name"] for x in listed["policies"]} == {"gw3-a"}
    status, gws = api.call("GET", "/v1/admin/gateways")
    assert status == 200 and {x["name"] for x in gws["policies"]} == {"gw3-a"}
    assert f"removed {gw2} and its gateway policies gw2-a, gw2-b" in p.log()
    assert api.call("DELETE", f"/v1/admin/systems/{gw2}")[0] == 404

    # removal with the CLI (another process): the same
    res = p.cli("systems", "remove", gw3)
    assert res.returncode == 0, res.stderr
    assert "gateway policies removed with it: gw3-a" in res.stdout
    assert {r[0] for r in policy_rows(p)} - before == {"to-gw2"}
    assert api.call("GET", PATH)[1]["policies"] == []
    assert api.call("DELETE", "/v1/admin/policies/to-gw2") == (200, {"removed": "to-gw2"})
    assert {r[0] for r in policy_rows(p)} == before
