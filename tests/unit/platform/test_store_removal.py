"""One removal path for a system, by admin (`systems remove`) or by the ephemeral reaper, against
a real store on both backends (SQLite and PostgreSQL): certificates revoked, its own intents and
the intents naming it deleted, the gateway policies whose gateway it is deleted (other policies
kept), the name retired, all in one transaction (a failure half-way leaves every row in place).
Clearing a system's gateway role keeps its gateway policies. Also the store side of gateway
policies: unknown gateway / duplicate name refused with nothing written.
"""

from __future__ import annotations

import ipaddress
import itertools
from pathlib import Path

import pytest

from enclave.platform.errors import ApiError, StoreError
from enclave.platform.store import IssuedCert, System
from tests.support.store import SyncStore

OVERLAY = ipaddress.IPv4Network("100.64.0.0/10")
LAN = "198.19.5.0/24"
_serials = itertools.count(1000)


def issue(system: System) -> IssuedCert:
    return IssuedCert(serial=next(_serials), der=b"cert", not_before=0, not_after=10**10)


def enrol(store: SyncStore, n: int, *, ephemeral: bool = False, now: int = 1) -> System:
    key = store.create_key(secret=bytes([n]) * 32, now=0, expires_at=None, uses_allowed=None,
                           tags=(), approval="auto", ephemeral=ephemeral, cert_lifetime=3600)
    system, cert = store.enrol(key_id=key.id, secret=bytes([n]) * 32, public_key=bytes([n]) * 32,
                               hostname=f"h{n}", overlay=OVERLAY, now=now, issue=issue)
    assert cert is not None
    return system


def intend(store: SyncStore, a: str, b: str, policy: str | None = None) -> None:
    store.put_intent(a, b, b"statement", b"signature", 1, None, policy)


def pairs(store: SyncStore) -> set[tuple[str, str]]:
    return {(r.from_name, r.to_name) for r in store.list_intents()}


@pytest.fixture
def world(store_location: str | Path) -> tuple[SyncStore, System, System, System]:
    store = SyncStore(store_location)
    a, b, c = enrol(store, 1), enrol(store, 2, ephemeral=True), enrol(store, 3)
    for x, y in ((a, b), (b, a), (b, c), (c, b), (a, c), (c, a)):
        intend(store, x.name, y.name)
    intend(store, a.name, "ghost")  # an intent for a name that is no system stays untouched
    return store, a, b, c


def _check_forgotten(store: SyncStore, gone: System, crl_before: int) -> None:
    names = {s.name for s in store.list_systems()}
    assert gone.name not in names
    assert all(gone.name not in pair for pair in pairs(store))
    assert store.crl_number() > crl_before
    revoked = store.sql(
        "SELECT revoke_reason FROM certificates WHERE system_name = ?", (gone.name,))
    assert revoked and {r["revoke_reason"] for r in revoked} == {"cessation"}
    assert store.sql("SELECT 1 AS x FROM retired_names WHERE name = ?", (gone.name,))
    with pytest.raises(ApiError) as err:
        store.get_system(gone.name)
    assert err.value.status == 404


def test_admin_remove_drops_own_and_targeting_intents(
        world: tuple[SyncStore, System, System, System]) -> None:
    store, a, b, c = world
    crl = store.crl_number()
    store.remove(b.name, 10)
    _check_forgotten(store, b, crl)
    assert pairs(store) == {(a.name, c.name), (c.name, a.name), (a.name, "ghost")}
    with pytest.raises(ApiError) as err:  # removing twice: 404, nothing else changes
        store.remove(b.name, 11)
    assert err.value.status == 404
    assert len(pairs(store)) == 3


def test_reaper_removes_exactly_like_admin(store_location: str | Path) -> None:
    store = SyncStore(store_location)
    keep = enrol(store, 1, now=1)
    eph = enrol(store, 2, ephemeral=True, now=1)
    eph_online = enrol(store, 3, ephemeral=True, now=1)
    eph_recent = enrol(store, 4, ephemeral=True, now=50)
    for x, y in itertools.permutations((keep, eph, eph_online, eph_recent), 2):
        intend(store, x.name, y.name)
    crl = store.crl_number()
    reaped = store.reap_ephemeral(offline_since=10, online={eph_online.name}, now=60)
    assert reaped == [eph.name]
    _check_forgotten(store, eph, crl)
    survivors = (keep, eph_online, eph_recent)
    assert pairs(store) == {(x.name, y.name) for x, y in itertools.permutations(survivors, 2)}
    assert store.reap_ephemeral(offline_since=10, online=set(), now=61) == [eph_online.name]
    assert store.reap_ephemeral(offline_since=10, online=set(), now=62) == []


@pytest.mark.parametrize("path", ["admin", "reaper"])
def test_failed_removal_leaves_everything(world: tuple[SyncStore, System, System, System],
                                          path: str) -> None:
    store, a, b, _c = world
    store.add_policy("b-lan", f"name:{a.name}", f"name:{b.name}", 5, gateway=b.name,
                     routes=(LAN,))
    intend(store, a.name, "ghost", policy="b-lan")
    before = (pairs(store), store.crl_number(), store.revoked_certificates(0),
              store.list_policies(), store.list_gateway_policies())
    # the last statement of the removal fails: nothing of the earlier ones may stay
    allow_deletes = store.fail_deletes("systems", "disk says no")
    with pytest.raises(StoreError, match="disk says no"):
        if path == "admin":
            store.remove(b.name, 10)
        else:
            store.reap_ephemeral(offline_since=10**9, online=set(), now=10)
    assert (pairs(store), store.crl_number(), store.revoked_certificates(0),
            store.list_policies(), store.list_gateway_policies()) == before
    assert store.get_system(b.name).state == "active"
    assert store.sql("SELECT COUNT(*) AS n FROM retired_names")[0]["n"] == 0
    allow_deletes()
    assert store.remove(b.name, 11) == ["b-lan"]  # and the store is usable afterwards
    assert b.name not in {s.name for s in store.list_systems()}
    assert store.list_policies() == []


def test_gateway_policy_store_checks(world: tuple[SyncStore, System, System, System]) -> None:
    store, a, b, _c = world
    with pytest.raises(ApiError) as err:
        store.add_policy("lan", f"name:{a.name}", "name:zzzzz", 5, gateway="zzzzz",
                         routes=("198.19.5.0/24",))
    assert err.value.status == 404 and "zzzzz" in err.value.message
    assert store.list_policies() == []
    store.add_policy("lan", f"name:{a.name}", f"name:{b.name}", 5, gateway=b.name,
                     routes=("198.19.5.0/24",), acl=("tcp:22",))
    with pytest.raises(ApiError) as err:
        store.add_policy("lan", "*", f"name:{b.name}", 6, gateway=b.name)
    assert err.value.status == 409
    assert store.list_gateway_policies() == [
        ("lan", f"name:{a.name}", b.name, ["198.19.5.0/24"], ["tcp:22"])]
    store.add_policy("plain", "*", "*", 7)
    with pytest.raises(ApiError) as err:  # a plain tag policy is not a gateway policy
        store.remove_policy("plain", gateway_only=True)
    assert err.value.status == 404
    intend(store, a.name, b.name, policy="lan")  # the counter-signed policy intent
    store.remove_policy("lan", gateway_only=True)
    assert [p.name for p in store.list_policies()] == ["plain"]
    assert (a.name, b.name) not in pairs(store)  # withdrawn with its policy
    assert (b.name, a.name) in pairs(store)  # an own intent (no policy) stays


def _gateway_policy_world(store: SyncStore, a: System, b: System, c: System) -> None:
    """b serves two gateway policies, c one (whose selector names b); two plain policies."""
    for name, from_sel, gw in (("b-lan", f"name:{a.name}", b), ("b-dmz", "*", b),
                               ("c-lan", f"name:{b.name}", c)):
        store.add_policy(name, from_sel, f"name:{gw.name}", 5, gateway=gw.name, routes=(LAN,))
    store.add_policy("a-b", f"name:{a.name}", f"name:{b.name}", 5)  # plain: left alone
    store.add_policy("web-db", "tag:web", "tag:db", 5)
    intend(store, a.name, b.name, policy="b-lan")
    # rows carrying a removed policy without naming b (not made by the platform, but possible
    # in the table): withdrawn with their policy; c-lan's intent stays
    intend(store, a.name, "phantom", policy="b-dmz")
    intend(store, c.name, a.name, policy="c-lan")


@pytest.mark.parametrize("path", ["admin", "reaper"])
def test_removal_deletes_its_gateway_policies(world: tuple[SyncStore, System, System, System],
                                              path: str) -> None:
    store, a, b, c = world
    _gateway_policy_world(store, a, b, c)
    crl = store.crl_number()
    if path == "admin":
        assert store.remove(b.name, 10) == ["b-dmz", "b-lan"]
    else:
        assert store.reap_ephemeral(offline_since=10**9, online=set(), now=10) == [b.name]
    _check_forgotten(store, b, crl)
    assert [p.name for p in store.list_policies()] == ["a-b", "c-lan", "web-db"]
    assert store.list_gateway_policies() == [
        ("c-lan", f"name:{b.name}", c.name, [LAN], ["any"])]
    assert {(r.from_name, r.to_name, r.policy) for r in store.list_intents()} == {
        (a.name, c.name, None), (c.name, a.name, "c-lan"), (a.name, "ghost", None)}
    # removing c (a gateway with no other policies) takes c-lan; removing a takes none
    assert store.remove(c.name, 11) == ["c-lan"]
    assert store.remove(a.name, 12) == []
    assert [p.name for p in store.list_policies()] == ["a-b", "web-db"]
    assert store.list_intents() == []


def test_clearing_gateway_role_keeps_its_policies(
        world: tuple[SyncStore, System, System, System]) -> None:
    store, a, b, c = world
    _gateway_policy_world(store, a, b, c)
    store.set_gateway(b.name, (ipaddress.IPv4Network(LAN),), False)
    before = (store.list_policies(), store.list_gateway_policies(), pairs(store))
    cleared = store.set_gateway(b.name, (), True)
    assert cleared.gateway_routes == () and cleared.gateway_nat is True
    assert (store.list_policies(), store.list_gateway_policies(), pairs(store)) == before
    assert store.remove(b.name, 10) == ["b-dmz", "b-lan"]  # removal still takes them
