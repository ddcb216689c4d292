"""Gateway endpoints of the admin HTTP API against a real `enclave platform serve` process (TLS,
SQLite) and a real `enclave up --no-tap` agent: the admin token guards them, bad input is a 400
with a reason, setting routes makes the hub push a renewal so the running gateway's next
certificate carries them, clearing them makes the next one drop them.

    PUT    /v1/admin/systems/{name}/gateway   DELETE /v1/admin/systems/{name}/gateway
    GET    /v1/admin/gateways                 GET    /v1/admin/gateway-policies
"""

from __future__ import annotations

import datetime
import urllib.parse
from collections.abc import Iterator

import pytest

from enclave.agent.state import StateDir
from tests.support.admin_api import AdminApi
from tests.support.agent import AgentProc, loopback_agents
from tests.support.platform import Platform
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(90)
LAN = "198.19.77.0/24"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Platform, AdminApi, dict[str, AgentProc]]]:
    with loopback_agents(tmp_path_factory.mktemp("gwadmin"), ["gw", "ops"], start=False,
                         ENCLAVE_PLATFORM_RELAY="off") as (plat, agents):
        assert plat.admin_token.startswith("enclave-admin-")
        agents["gw"].up()
        yield plat, AdminApi.pinned(plat.url, plat.token(), plat.admin_token), agents


def _cert_routes(a: AgentProc) -> list[str]:
    ident = StateDir(a.state).identity(datetime.datetime.now(datetime.UTC))
    return [str(r) for r in ident.gateway_routes]


def test_gateway_admin_endpoints(
        world: tuple[Platform, AdminApi, dict[str, AgentProc]]) -> None:
    plat, api, ag = world
    gw, ops = ag["gw"], ag["ops"]
    path = f"/v1/admin/systems/{urllib.parse.quote(gw.name)}/gateway"

    # the admin token guards every gateway endpoint
    for method, p, body in (("GET", "/v1/admin/gateways", None),
                            ("GET", "/v1/admin/gateway-policies", None),
                            ("PUT", path, {"routes": [LAN]}), ("DELETE", path, None)):
        for bad in ("", "enclave-admin-wrong"):
            status, reply = api.call(method, p, body, token=bad)
            assert status == 401 and "admin token" in reply["error"], (method, p)
    assert api.call("GET", "/v1/admin/gateways")[1] == {"gateways": [], "policies": []}

    # bad input: a 400 with a reason, nothing stored
    for bad_body in ({}, {"routes": []}, {"routes": "198.19.77.0/24"}, {"routes": [7]},
                     {"routes": ["0.0.0.0/0"]}, {"routes": ["198.19.77.1/24"]},
                     {"routes": ["not-a-subnet"]}, {"routes": ["127.0.0.0/8"]},
                     {"routes": [LAN], "nat": "yes"}):
        status, reply = api.call("PUT", path, bad_body)
        assert status == 400 and reply["error"], (bad_body, reply)
    status, reply = api.call("PUT", path, raw=b"{not json")
    assert status == 400
    status, reply = api.call("PUT", "/v1/admin/systems/zzzzz/gateway", {"routes": [LAN]})
    assert status == 404, reply
    assert api.call("GET", "/v1/admin/gateways")[1]["gateways"] == []

    # set: stored at once; the hub asks the running gateway to renew -> its certificate
    status, reply = api.call("PUT", path, {"routes": [LAN, "10.77.0.0/16"], "nat": False})
    assert status == 200, reply
    assert reply["gateway_routes"] == ["10.77.0.0/16", LAN] and reply["gateway_nat"] is False
    wait_for(lambda: _cert_routes(gw) == ["10.77.0.0/16", LAN], timeout=15,
             what="renewed certificate carrying the gateway routes")
    status, listed = api.call("GET", "/v1/admin/gateways")
    assert status == 200
    assert listed["gateways"] == [{"name": gw.name, "routes": ["10.77.0.0/16", LAN], "nat": False,
                                   "state": "active", "certified": True, "policies": []}]

    # a gateway policy made with the CLI shows in both listings
    res = plat.cli("policy", "add", "--name", "ops-lan", "--from", f"name:{ops.name}",
                   "--gateway", gw.name, "--routes", LAN, "--acl", "tcp:5201,icmp")
    assert res.returncode == 0, res.stderr
    status, pol = api.call("GET", "/v1/admin/gateway-policies")
    assert status == 200 and len(pol["policies"]) == 1
    p = pol["policies"][0]
    assert (p["name"], p["from"], p["gateway"], p["routes"]) == (
        "ops-lan", f"name:{ops.name}", gw.name, [LAN])
    assert sorted(p["acl"]) == ["icmp", "tcp:5201"] and isinstance(p["created_at"], int)
    assert api.call("GET", "/v1/admin/gateways")[1]["gateways"][0]["policies"] == ["ops-lan"]

    # clear: no longer listed; the next certificate drops the routes
    status, reply = api.call("DELETE", path)
    assert status == 200 and reply["gateway_routes"] == []
    assert api.call("GET", "/v1/admin/gateways")[1]["gateways"] == []
    wait_for(lambda: _cert_routes(gw) == [], timeout=15, what="certificate without routes")
    assert api.call("DELETE", "/v1/admin/systems/zzzzz/gateway")[0] == 404
