"""End to end against a real `enclave platform serve` process, once with each store backend
(SQLite, PostgreSQL): init -> key -> enrol two agents -> list -> gated approve -> renew -> tag ->
disable -> revoke.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import urllib.parse
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from enclave.agent.client import PinnedClient
from enclave.agent.enrol import enrol, renew, renew_if_due, renewal_due_at, resume
from enclave.agent.errors import AgentError
from enclave.agent.state import StateDir
from enclave.cert import CertificateError, parse_crl, verify_system_certificate
from enclave.cert.enrolment import PATH_CA, PATH_CRL, EnrolmentToken
from enclave.cert.names import is_valid_system_name, mac_for_name
from tests.support.admin_api import AdminApi
from tests.support.platform import Platform
from tests.support.proc import run_cli


@pytest.fixture(scope="module")
def platform(platform_each_store: Platform) -> Platform:
    return platform_each_store


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def client(p: Platform) -> PinnedClient:
    pin = EnrolmentToken.decode(p.new_token()).pin
    return PinnedClient(p.url, pin)


def der(state: StateDir) -> bytes:
    return state.load_certificate().public_bytes(serialization.Encoding.DER)


def crl_serials(p: Platform, c: PinnedClient, ca: x509.Certificate) -> frozenset[int]:
    status, body = c.request("GET", PATH_CRL)
    assert status == 200
    return parse_crl(body, ca, now=now()).serials


def test_full_lifecycle(platform: Platform, tmp_path: Path) -> None:
    p = platform
    token = p.new_token("--uses", "2", "--tags", "web,linux", "--cert-lifetime", "1h")

    # agent 1 through the real CLI (subprocess), agent 2 in-process; both over real TLS
    s1, s2 = tmp_path / "a1", tmp_path / "a2"
    res = run_cli("enrol", token, "--state", str(s1), "--hostname", "alpha", "--json")
    assert res.returncode == 0, res.stderr
    r1 = json.loads(res.stdout)
    r2 = enrol(token, StateDir(s2), hostname="beta")
    assert r1["state"] == r2.state == "active"
    assert r1["name"] != r2.name
    assert is_valid_system_name(r1["name"]) and len(r2.name) == 5
    overlay = ipaddress.IPv4Network("100.64.0.0/10")
    ips = {ipaddress.IPv4Address(r1["overlay_ip"]), ipaddress.IPv4Address(r2.overlay_ip)}
    assert len(ips) == 2
    assert all(ip in overlay and ip not in (overlay.network_address, overlay.broadcast_address)
               for ip in ips)

    # the stored certificates verify against the CA and carry name, IP, MAC, tags
    st1, st2 = StateDir(s1), StateDir(s2)
    ca = st1.load_ca()
    id1 = verify_system_certificate(der(st1), ca, now=now())
    id2 = st2.identity(now())
    assert id1.name == r1["name"] and str(id1.overlay_ip) == r1["overlay_ip"]
    assert id1.mac == mac_for_name(id1.name) and id1.tags == ("linux", "web")
    assert id1.overlay_prefix == 10 and id1.org == "acme"
    assert abs((id1.not_after - id1.not_before) - datetime.timedelta(hours=1, minutes=1)) < (
        datetime.timedelta(seconds=5))

    # a third enrolment with the 2-use key is refused, and leaves no state behind
    with pytest.raises(AgentError, match="used up"):
        enrol(token, StateDir(tmp_path / "a3"))
    assert not (tmp_path / "a3" / "key.pem").exists()
    assert not (tmp_path / "a3" / "enrolment.json").exists()

    # list (CLI, JSON)
    res = p.cli("systems", "list", "--json")
    assert res.returncode == 0, res.stderr
    listed = {s["name"]: s for s in json.loads(res.stdout)["systems"]}
    assert listed[id1.name]["hostname"] == "alpha" and listed[id2.name]["hostname"] == "beta"
    assert listed[id1.name]["state"] == "active"
    assert listed[id1.name]["overlay_ip"] == str(id1.overlay_ip)
    assert listed[id1.name]["tags"] == ["linux", "web"]
    assert listed[id1.name]["certificate_expires"] == int(id1.not_after.timestamp())
    assert listed[id1.name]["last_seen"] is not None

    # gated key: pending until approved; --resume before approval stays pending (exit 3)
    gated = p.new_token("--approval", "gated")
    s3 = tmp_path / "g"
    res = run_cli("enrol", gated, "--state", str(s3), "--json")
    assert res.returncode == 3, res.stderr
    pending = json.loads(res.stdout)
    assert pending["state"] == "pending"
    assert not (s3 / "system.crt").exists()
    assert resume(StateDir(s3)).state == "pending"
    res = p.cli("systems", "approve", pending["name"])
    assert res.returncode == 0, res.stderr
    res = run_cli("enrol", "--resume", "--state", str(s3), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["state"] == "active"
    id3 = StateDir(s3).identity(now())
    assert id3.name == pending["name"] and str(id3.overlay_ip) == pending["overlay_ip"]

    # renewal: not due now; due at 2/3 of the lifetime (injected clock); same key, new serial
    assert renew_if_due(st2, now()) is None
    due = renewal_due_at(id2)
    assert renew_if_due(st2, due - datetime.timedelta(seconds=5)) is None
    renewed = renew_if_due(st2, due + datetime.timedelta(seconds=1))
    assert renewed is not None
    assert renewed.serial != id2.serial and renewed.public_key == id2.public_key
    assert renewed.name == id2.name and renewed.overlay_ip == id2.overlay_ip
    assert st2.identity(now()).serial == renewed.serial
    # `enclave renew --force` via the CLI; tag changes appear in the renewed certificate
    res = p.cli("systems", "tag", id1.name, "+db", "-web")
    assert res.returncode == 0, res.stderr
    res = run_cli("renew", "--force", "--state", str(s1))
    assert res.returncode == 0, res.stderr
    id1b = st1.identity(now())
    assert id1b.serial != id1.serial and id1b.tags == ("db", "linux")
    res = run_cli("renew", "--state", str(s1))  # not due: reports, changes nothing
    assert res.returncode == 0 and "renewal due" in res.stdout
    assert st1.identity(now()).serial == id1b.serial

    # disable -> certificates on hold in the CRL, renewal refused; enable lifts it
    c = client(p)
    assert id3.serial not in crl_serials(p, c, ca)
    assert p.cli("systems", "disable", id3.name).returncode == 0
    assert id3.serial in crl_serials(p, c, ca)
    with pytest.raises(AgentError, match="disabled"):
        renew(StateDir(s3))
    assert p.cli("systems", "enable", id3.name).returncode == 0
    assert id3.serial not in crl_serials(p, c, ca)

    # revoke -> every certificate of the system is in the CA-signed CRL; peers reject it
    res = p.cli("systems", "revoke", id2.name)
    assert res.returncode == 0, res.stderr
    revoked = crl_serials(p, c, ca)
    assert {id2.serial, renewed.serial} <= revoked
    assert id1b.serial not in revoked
    with pytest.raises(CertificateError, match="revoked"):
        verify_system_certificate(der(st2), ca, now=now(), revoked_serials=revoked)
    with pytest.raises(AgentError, match="revoked"):
        renew_if_due(st2, now() + datetime.timedelta(days=1))
    # the CA served over the pinned connection is the one the agents hold
    status, ca_pem = c.request("GET", PATH_CA)
    assert status == 200 and x509.load_pem_x509_certificate(ca_pem) == ca

    # remove: gone from the list, certificates stay revoked
    assert p.cli("systems", "remove", id3.name).returncode == 0
    res = p.cli("systems", "list")
    assert res.returncode == 0 and id3.name not in res.stdout and id1.name in res.stdout
    assert id3.serial in crl_serials(p, c, ca)

    # an expired certificate is never used by the agent
    with pytest.raises(AgentError, match="expired"):
        st1.identity(id1b.not_after + datetime.timedelta(seconds=1))


def test_admin_http_api(platform: Platform, tmp_path: Path) -> None:
    p = platform
    api = AdminApi(client(p), p.admin_token)
    for bad in ("", "enclave-admin-wrong"):
        status, body = api.call("GET", "/v1/admin/systems", token=bad)
        assert status == 401 and "admin token" in body["error"]
    status, body = api.call("POST", "/v1/admin/keys",
                            {"uses": 1, "approval": "gated", "tags": ["api"], "expires": "1h"})
    assert status == 201
    token = body["token"]
    assert EnrolmentToken.decode(token).url == p.url
    result = enrol(token, StateDir(tmp_path / "s"))
    assert result.state == "pending"
    name = urllib.parse.quote(result.name)
    status, body = api.call("POST", f"/v1/admin/systems/{name}/approve")
    assert status == 200 and body["state"] == "active"
    status, body = api.call("POST", f"/v1/admin/systems/{name}/approve")
    assert status == 409
    assert resume(StateDir(tmp_path / "s")).state == "active"
    status, body = api.call("POST", f"/v1/admin/systems/{name}/tags",
                            {"changes": ["+x1", "-api"]})
    assert status == 200 and body["tags"] == ["x1"]
    status, body = api.call("POST", f"/v1/admin/systems/{name}/tags",
                            {"changes": ["+Bad Tag"]})
    assert status == 400
    status, body = api.call("GET", "/v1/admin/systems")
    assert status == 200 and name in {s["name"] for s in body["systems"]}
    status, body = api.call("GET", "/v1/admin/keys")
    assert status == 200
    assert all("secret" not in json.dumps(k) for k in body["keys"])
    key_id = EnrolmentToken.decode(token).key_id
    assert api.call("POST", f"/v1/admin/keys/{key_id}/revoke")[0] == 200
    assert api.call("POST", f"/v1/admin/keys/{key_id}/revoke")[0] == 404
    assert api.call("DELETE", f"/v1/admin/systems/{name}")[0] == 200
    assert api.call("POST", "/v1/admin/systems/ZZZZZ/revoke")[0] == 404


def test_keys_list_and_revoke_cli(platform: Platform, tmp_path: Path) -> None:
    p = platform
    token = p.new_token("--unlimited", "--expires", "never")
    key_id = EnrolmentToken.decode(token).key_id
    res = p.cli("keys", "list", "--json")
    keys = {k["id"]: k for k in json.loads(res.stdout)["keys"]}
    assert keys[key_id]["uses_allowed"] is None and keys[key_id]["expires_at"] is None
    assert EnrolmentToken.decode(token).secret.hex() not in res.stdout
    assert p.cli("keys", "revoke", key_id).returncode == 0
    with pytest.raises(AgentError, match="revoked"):
        enrol(token, StateDir(tmp_path / "s"))
    res = p.cli("keys", "revoke", "nonexistent")
    assert res.returncode == 1 and "no active enrolment key" in res.stderr
