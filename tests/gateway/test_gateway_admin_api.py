"""Gateway endpoints of the admin HTTP API against a real `enclave platform serve` process (TLS,
SQLite) and a real `enclave up --no-tap` agent: the admin token guards them, bad input is a 400
with a reason, setting routes makes the hub push a renewal so the running gateway's next
certificate carries them, clearing them makes the next one drop them.

    PUT    /v1/admin/systems/{name}/gateway   DELETE /v1/admin/systems/{name}/gateway
    GET    /v1/admin/gateways                 GET    /v1/admin/gateway-policies
"""

from __future__ import annotations

import datetime
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from enclave.agent.client import PinnedClient
from enclave.agent.state import StateDir
from enclave.cert.enrolment import EnrolmentToken
from tests.control.helpers import (
    AgentProc,
    Platform,
    enclave,
    free_port,
    local_popen,
    local_run,
    wait_for,
)

pytestmark = pytest.mark.timeout(90)
LAN = "198.19.77.0/24"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[Platform, str, PinnedClient, dict[str, AgentProc]]]:
    tmp = tmp_path_factory.mktemp("gwadmin")
    port = free_port()
    data = tmp / "platform"
    url = f"https://127.0.0.1:{port}"
    res = local_run(enclave("platform", "init", "--data", str(data), "--url", url, "--org", "acme"))
    assert res.returncode == 0, res.stderr
    admin_token = res.stdout.strip().splitlines()[-1]
    assert admin_token.startswith("enclave-admin-")
    plat = Platform(data, url, f"127.0.0.1:{port}", local_run, local_popen, tmp / "platform.log")
    plat.extra_env["ENCLAVE_DISCOVERY_PORTS"] = f"{free_port()},{free_port()}"
    plat.extra_env["ENCLAVE_PLATFORM_RELAY"] = "off"
    plat.start()
    agents: dict[str, AgentProc] = {}
    try:
        token = plat.token()
        client = PinnedClient(url, EnrolmentToken.decode(token).pin)
        for role in ("gw", "ops"):
            a = AgentProc(tmp / role, local_run, local_popen, tmp / f"{role}.log", free_port())
            a.enrol(token)
            agents[role] = a
        agents["gw"].up()
        yield plat, admin_token, client, agents
    finally:
        for a in agents.values():
            a.down()
        plat.stop()


def _call(c: PinnedClient, token: str, method: str, path: str, body: Any = None,
          raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    conn = c._connect()
    try:
        headers = {"Authorization": f"Bearer {token}"}
        payload = raw
        if body is not None:
            payload = json.dumps(body).encode()
        if payload is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _cert_routes(a: AgentProc) -> list[str]:
    ident = StateDir(a.state).identity(datetime.datetime.now(datetime.UTC))
    return [str(r) for r in ident.gateway_routes]


def test_gateway_admin_endpoints(
        world: tuple[Platform, str, PinnedClient, dict[str, AgentProc]]) -> None:
    plat, token, c, ag = world
    gw, ops = ag["gw"], ag["ops"]
    path = f"/v1/admin/systems/{urllib.parse.quote(gw.name)}/gateway"

    # the admin token guards every gateway endpoint
    for method, p, body in (("GET", "/v1/admin/gateways", None),
                            ("GET", "/v1/admin/gateway-policies", None),
                            ("PUT", path, {"routes": [LAN]}), ("DELETE", path, None)):
        for bad in ("", "enclave-admin-wrong"):
            status, reply = _call(c, bad, method, p, body)
            assert status == 401 and "admin token" in reply["error"], (method, p)
    assert _call(c, token, "GET", "/v1/admin/gateways")[1] == {"gateways": [], "policies": []}

    # bad input: a 400 with a reason, nothing stored
    for bad_body in ({}, {"routes": []}, {"routes": "198.19.77.0/24"}, {"routes": [7]},
                     {"routes": ["0.0.0.0/0"]}, {"routes": ["198.19.77.1/24"]},
                     {"routes": ["not-a-subnet"]}, {"routes": ["127.0.0.0/8"]},
                     {"routes": [LAN], "nat": "yes"}):
        status, reply = _call(c, token, "PUT", path, bad_body)
        assert status == 400 and reply["error"], (bad_body, reply)
    status, reply = _call(c, token, "PUT", path, raw=b"{not json")
    assert status == 400
    status, reply = _call(c, token, "PUT", "/v1/admin/systems/zzzzz/gateway", {"routes": [LAN]})
    assert status == 404, reply
    assert _call(c, token, "GET", "/v1/admin/gateways")[1]["gateways"] == []

    # set: stored at once; the hub asks the running gateway to renew -> its certificate
    status, reply = _call(c, token, "PUT", path, {"routes": [LAN, "10.77.0.0/16"], "nat": False})
    assert status == 200, reply
    assert reply["gateway_routes"] == ["10.77.0.0/16", LAN] and reply["gateway_nat"] is False
    wait_for(lambda: _cert_routes(gw) == ["10.77.0.0/16", LAN], timeout=15,
             what="renewed certificate carrying the gateway routes")
    status, listed = _call(c, token, "GET", "/v1/admin/gateways")
    assert status == 200
    assert listed["gateways"] == [{"name": gw.name, "routes": ["10.77.0.0/16", LAN], "nat": False,
                                   "state": "active", "certified": True, "policies": []}]

    # a gateway policy made with the CLI shows in both listings
    res = plat.cli("policy", "add", "--name", "ops-lan", "--from", f"name:{ops.name}",
                   "--gateway", gw.name, "--routes", LAN, "--acl", "tcp:5201,icmp")
    assert res.returncode == 0, res.stderr
    status, pol = _call(c, token, "GET", "/v1/admin/gateway-policies")
    assert status == 200 and len(pol["policies"]) == 1
    p = pol["policies"][0]
    assert (p["name"], p["from"], p["gateway"], p["routes"]) == (
        "ops-lan", f"name:{ops.name}", gw.name, [LAN])
    assert sorted(p["acl"]) == ["icmp", "tcp:5201"] and isinstance(p["created_at"], int)
    assert _call(c, token, "GET", "/v1/admin/gateways")[1]["gateways"][0]["policies"] == [
        "ops-lan"]

    # clear: no longer listed; the next certificate drops the routes
    status, reply = _call(c, token, "DELETE", path)
    assert status == 200 and reply["gateway_routes"] == []
    assert _call(c, token, "GET", "/v1/admin/gateways")[1]["gateways"] == []
    wait_for(lambda: _cert_routes(gw) == [], timeout=15, what="certificate without routes")
    assert _call(c, token, "DELETE", "/v1/admin/systems/zzzzz/gateway")[0] == 404
