"""Gateways on the platform: real store (SQLite, driven synchronously: tests.support.store),
real CA, the `enclave platform` CLI in-process: `systems gateway`, gateway policies,
offers/grants clipped to the certificate, renew pushes and re-introduction when gateway
information changes."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest

from enclave.cert.keys import generate_private_key, public_key_raw
from enclave.discovery.candidates import NatBehaviour
from enclave.discovery.introduction import Introduction, IntroductionError
from enclave.platform.authority import Authority
from enclave.platform.cli import main as platform_main
from enclave.platform.gateways import GatewaySync, cert_routes, gateway_info, needs_renewal
from enclave.platform.init import init_platform
from enclave.platform.paths import PlatformPaths, PlatformSettings
from enclave.policy.gateway import parse_acl, parse_routes
from tests.support.store import SyncStore

NOW = datetime.datetime.now(datetime.UTC)
LAN = ipaddress.IPv4Network("198.19.50.0/24")


@pytest.fixture
def plat(tmp_path: Path) -> tuple[PlatformPaths, SyncStore, Authority, dict[str, str]]:
    paths = PlatformPaths(tmp_path / "data")
    init_platform(paths, url="https://127.0.0.1:8443", org="lab",
                  overlay=ipaddress.IPv4Network("100.64.0.0/10"), now=NOW)
    store = SyncStore(paths.db)
    settings = store.run(PlatformSettings.load(store.store))
    auth = Authority.load(paths, settings.org, settings.overlay.prefixlen)
    key = store.create_key(secret=b"k" * 32, now=0, expires_at=None, uses_allowed=None,
                           tags=(), approval="auto", ephemeral=False, cert_lifetime=86400)
    names = {}
    for role, tags in (("client", ("ops",)), ("other", ("web",)), ("gw", ())):
        system, _cert = store.enrol(key_id=key.id, secret=b"k" * 32,
                                    public_key=public_key_raw(generate_private_key()),
                                    hostname=role, overlay=settings.overlay,
                                    now=int(NOW.timestamp()), issue=auth.issuer(NOW))
        store.set_tags(system.name, tags, ())
        names[role] = system.name
    yield paths, store, auth, names
    store.close()



def test_systems_gateway_cli_and_renewal(plat, capsys: pytest.CaptureFixture[str]) -> None:
    paths, store, auth, n = plat
    now = int(NOW.timestamp())
    gw = n["gw"]
    assert not needs_renewal(store.snapshot(now, {gw}), store.get_system(gw), now)
    assert platform_main(["platform", "systems", "gateway", gw, "--routes",
                          "198.19.50.0/24,10.9.0.0/16", "--no-nat", "--data", str(paths.root)]) == 0
    store2 = SyncStore(paths.db)  # what another process sees
    system = store2.get_system(gw)
    assert system.gateway_routes == parse_routes("10.9.0.0/16,198.19.50.0/24")
    assert system.gateway_nat is False and system.as_json()["gateway_nat"] is False
    assert needs_renewal(store2.snapshot(now, {gw}), system, now)  # the cert lacks the routes
    cert = store2.issue_certificate(gw, now, auth.issuer(NOW + datetime.timedelta(seconds=5)))
    assert cert_routes(cert.der) == system.gateway_routes
    assert not needs_renewal(store2.snapshot(now, {gw}), system, now)
    store2.close()
    # bad input: clear errors, nothing changed
    for bad in (["--routes", "0.0.0.0/0"], ["--routes", "10.0.0.1/8"], [],
                ["--routes", "10.1.0.0/16", "--clear"]):
        assert platform_main(["platform", "systems", "gateway", gw, *bad,
                              "--data", str(paths.root)]) == 1
    assert platform_main(["platform", "systems", "gateway", "NOSUCH", "--routes",
                          "10.1.0.0/16", "--data", str(paths.root)]) == 1
    assert "error:" in capsys.readouterr().err
    assert store.get_system(gw).gateway_routes == parse_routes("10.9.0.0/16,198.19.50.0/24")
    assert platform_main(["platform", "systems", "gateway", gw, "--clear",
                          "--data", str(paths.root)]) == 0
    store3 = SyncStore(paths.db)
    assert store3.get_system(gw).gateway_routes == ()
    store3.close()


def test_gateway_policy_offers_and_grants(plat) -> None:
    paths, _store, _auth, n = plat
    gw, client, other = n["gw"], n["client"], n["other"]
    d = ["--data", str(paths.root)]
    assert platform_main(["platform", "systems", "gateway", gw, "--routes", "198.19.50.0/24",
                          *d]) == 0
    assert platform_main(["platform", "policy", "add", "--name", "ops-lan", "--from", "tag:ops",
                          "--gateway", gw, "--routes", "198.19.50.0/24,10.0.0.0/8",
                          "--acl", "tcp:22,udp:53", *d]) == 0
    # bad policies are refused
    assert platform_main(["platform", "policy", "add", "--name", "x", "--from", "tag:ops",
                          "--gateway", gw, *d]) == 1  # no routes
    assert platform_main(["platform", "policy", "add", "--name", "y", "--from", "tag:ops",
                          "--to", "tag:web", "--routes", "10.0.0.0/8", *d]) == 1
    assert platform_main(["platform", "policy", "add", "--name", "z", "--from", "tag:ops",
                          "--gateway", gw, "--routes", "10.0.0.0/8", "--acl", "tcp:0", *d]) == 1
    assert platform_main(["platform", "policy", "add", "--name", "w", "--from", "tag:ops",
                          "--gateway", "NOSUCH", "--routes", "10.0.0.0/8", *d]) == 1
    s = SyncStore(paths.db)
    assert [p.name for p in s.list_policies()] == ["ops-lan"]
    assert s.list_policies()[0].to_sel == f"name:{gw}"  # mutual intent client <-> gateway
    policies = s.list_gateway_policies()
    sys_gw, sys_client, sys_other = (s.get_system(x) for x in (gw, client, other))
    offer, grants = gateway_info(sys_client, sys_gw, policies)
    assert offer is not None and offer.routes == (LAN,) and offer.nat  # 10/8 is not certified
    assert grants == ()
    offer2, grants2 = gateway_info(sys_gw, sys_client, policies)
    assert offer2 is None
    assert len(grants2) == 1 and grants2[0].routes == (LAN,)
    assert grants2[0].acl == parse_acl("tcp:22,udp:53") and grants2[0].policy == "ops-lan"
    assert gateway_info(sys_other, sys_gw, policies) == (None, ())  # not tag:ops
    s.close()


def test_gateway_sync_renew_push_and_reintroduction(plat) -> None:
    _paths, store, auth, n = plat
    gw, client = n["gw"], n["client"]
    now = int(NOW.timestamp())
    store.set_gateway(gw, (LAN,), True)
    store.add_policy("ops-lan", "tag:ops", f"name:{gw}", now, gateway=gw,
                     routes=("198.19.50.0/24",), acl=("any",))
    sent: list[tuple[str, dict[str, object]]] = []
    reintro: list[tuple[str, str]] = []
    sync = GatewaySync()
    pair = frozenset((gw, client))

    def run() -> None:
        systems = {s.name: s for s in store.list_systems()}
        sync.sync(store.snapshot(now, {gw, client}), systems,
                  {gw: object(), client: object()}, {pair}, now,
                  lambda name, msg: sent.append((name, msg)),
                  lambda a, b: reintro.append((a, b)) or True)

    run()
    assert sent == [(gw, {"type": "renew", "reason": "gateway routes changed"})]
    assert reintro == []  # first sight of the pair: recorded, not re-sent
    run()
    assert len(sent) == 1  # one push per certificate
    store.issue_certificate(gw, now, auth.issuer(NOW + datetime.timedelta(seconds=5)))  # renewed
    run()
    assert reintro == [tuple(sorted((gw, client)))]  # new certificate -> introduced again
    assert len(sent) == 1
    store.remove_policy("ops-lan")
    run()
    assert len(reintro) == 2  # the offer is gone: introduced again without it
    run()
    assert len(reintro) == 2


def test_introduction_carries_gateway_fields(plat) -> None:
    _paths, store, _auth, n = plat
    now = int(NOW.timestamp())
    cert = store.current_certificate(n["gw"], now)
    assert cert is not None
    store.set_gateway(n["gw"], (LAN,), True)
    store.add_policy("ops-lan", "tag:ops", f"name:{n['gw']}", now, gateway=n["gw"],
                     routes=("198.19.50.0/24",), acl=("icmp",))
    snap = store.snapshot(now)
    offer, _ = GatewaySync().intro_fields(snap, n["client"], n["gw"])
    _, grants = GatewaySync().intro_fields(snap, n["gw"], n["client"])
    intro = Introduction(n["gw"], cert.der, (), NatBehaviour.UNKNOWN, 1.0, gateway=offer,
                         grants=grants)
    back = Introduction.from_json(intro.to_json())
    assert back == intro and back.gateway is not None and back.grants[0].acl == parse_acl("icmp")
    plain = Introduction(n["gw"], cert.der, (), NatBehaviour.UNKNOWN, 1.0)
    assert "gateway" not in plain.to_json() and Introduction.from_json(plain.to_json()) == plain
    for bad in ({"routes": ["0.0.0.0/0"]}, "x", {"routes": ["10.0.0.0/8"], "nat": 1}):
        obj = intro.to_json()
        obj["gateway"] = bad
        with pytest.raises(IntroductionError):
            Introduction.from_json(obj)
    obj = intro.to_json()
    obj["grants"] = [{"routes": ["10.0.0.0/8"], "acl": ["bogus"]}]
    with pytest.raises(IntroductionError):
        Introduction.from_json(obj)
