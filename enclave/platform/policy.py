"""Tag policies (managed mode): `enclave platform policy add|list|remove`.

    enclave platform policy add --name web-db --from tag:web --to tag:db
    enclave platform policy add --name ops-lan --from tag:ops --gateway NAME \\
        --routes 198.19.50.0/24 [--acl tcp:22,udp:53,icmp | any]

The admin HTTP API does the same (routes_control.py: /v1/admin/policies; routes_admin.py:
/v1/admin/gateway-policies) through the same validators here: validate_policy and
validate_gateway_policy, whose result add_gateway_policy stores.

A policy makes the platform offer every matching pair a CA-signed intent in both directions
(enclave.policy.mutual.policy_offers); each agent verifies the CA signature and counter-signs it
with its own key, and the counter-signed statements are the stored intents. Removing the policy
(or a tag) deletes them, which withdraws the introductions. The commands open the store in --data
directly, like `keys` and `systems`; a running platform notices within a quarter second.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from enclave.cert.names import is_valid_system_name, is_valid_tag
from enclave.platform.cli_store import Command, with_store
from enclave.platform.paths import PlatformPaths
from enclave.platform.store import Store
from enclave.policy.gateway import parse_acl, parse_routes
from enclave.policy.intent import is_valid_policy_name


def validate_selector(sel: str) -> None:
    if sel == "*":
        return
    if sel.startswith("tag:") and is_valid_tag(sel[4:]):
        return
    if sel.startswith("name:") and is_valid_system_name(sel[5:]):
        return
    raise ValueError(f"selector {sel!r} must be tag:TAG, name:SYSTEM or *")


def validate_policy(name: str, from_sel: str, to_sel: str) -> None:
    if not is_valid_policy_name(name):
        raise ValueError(f"policy name {name!r} must be lower-case letters, digits, . _ -")
    validate_selector(from_sel)
    validate_selector(to_sel)


@dataclass(frozen=True)
class GatewayPolicySpec:
    """A validated gateway access policy: ``from_sel`` may reach ``routes`` through ``gateway``
    (canonical text: sorted, de-duplicated routes; ACL entries normalised, ``any`` absorbs)."""

    name: str
    from_sel: str
    gateway: str
    routes: tuple[str, ...]
    acl: tuple[str, ...]

    @property
    def to_sel(self) -> str:
        return f"name:{self.gateway}"  # also a tag policy, so mutual intent introduces the pair


def validate_gateway_policy(name: str, from_sel: str, gateway: str,
                            routes: str | Iterable[str], acl: str | Iterable[str] | None
                            ) -> GatewayPolicySpec:
    """Check a gateway policy (CLI and admin API alike); ValueError says what is wrong."""
    if not is_valid_system_name(gateway):
        raise ValueError(f"gateway {gateway!r} is not a system name")
    if not routes:
        raise ValueError("a gateway policy needs routes (CIDR,...)")
    parsed = parse_routes(routes)
    entries = parse_acl(acl)
    validate_policy(name, from_sel, f"name:{gateway}")
    return GatewayPolicySpec(name, from_sel, gateway, tuple(str(r) for r in parsed),
                             tuple(str(a) for a in entries))


async def add_gateway_policy(store: Store, spec: GatewayPolicySpec, now: int) -> None:
    """Store it; ApiError 404 for an unknown gateway, 409 for a name in use (one transaction)."""
    await store.add_policy(spec.name, spec.from_sel, spec.to_sel, now, gateway=spec.gateway,
                     routes=spec.routes, acl=spec.acl)


def register(psub: argparse._SubParsersAction, data_arg: Callable[[argparse.ArgumentParser], None],
             guard: Callable[[Command], Command]) -> None:  # type: ignore[type-arg,unused-ignore]
    def cmd_add(args: argparse.Namespace) -> int:
        if (args.to_sel is None) == (args.gateway is None):
            raise ValueError("give --to SELECTOR, or --gateway NAME --routes CIDR,...")
        spec = None
        if args.gateway is not None:
            spec = validate_gateway_policy(args.name, args.from_sel, args.gateway,
                                           args.routes or "", args.acl)
        elif args.routes or args.acl:
            raise ValueError("--routes and --acl belong to gateway policies (--gateway NAME)")
        else:
            validate_policy(args.name, args.from_sel, args.to_sel)
        now = int(datetime.datetime.now(datetime.UTC).timestamp())

        async def add(store: Store, _paths: PlatformPaths) -> None:
            if spec is not None:
                await add_gateway_policy(store, spec, now)
            else:
                await store.add_policy(args.name, args.from_sel, args.to_sel, now)

        with_store(args, add)
        if spec is not None:
            print(f"policy {spec.name}: {spec.from_sel} -> gateway {spec.gateway} "
                  f"routes {','.join(spec.routes)} acl {','.join(spec.acl)}")
        else:
            print(f"policy {args.name}: {args.from_sel} <-> {args.to_sel}")
        return 0

    def cmd_list(args: argparse.Namespace) -> int:
        rows = with_store(args, lambda store, _paths: store.list_policies())
        if args.json:
            print(json.dumps({"policies": [
                {"name": p.name, "from": p.from_sel, "to": p.to_sel, "created_at": p.created_at}
                for p in rows]}))
        else:
            for p in rows:
                print(f"{p.name:24} {p.from_sel} <-> {p.to_sel}")
        return 0

    def cmd_remove(args: argparse.Namespace) -> int:
        with_store(args, lambda store, _paths: store.remove_policy(args.name))
        print(f"policy {args.name} removed")
        return 0

    pol = psub.add_parser("policy", help="tag policies that grant mutual intent (managed mode)")
    sub = pol.add_subparsers(dest="policy_command", metavar="COMMAND", required=True)
    p = sub.add_parser("add", help="add a policy: --name N --from tag:a --to tag:b")
    data_arg(p)
    p.add_argument("--name", required=True)
    p.add_argument("--from", dest="from_sel", required=True, metavar="SELECTOR")
    p.add_argument("--to", dest="to_sel", default=None, metavar="SELECTOR")
    p.add_argument("--gateway", default=None, metavar="SYSTEM",
                   help="a gateway access policy: --from may reach --routes through SYSTEM")
    p.add_argument("--routes", default=None, metavar="CIDR,...")
    p.add_argument("--acl", default=None, metavar="tcp:22,udp:53,icmp,any")
    p.set_defaults(func=guard(cmd_add))
    p = sub.add_parser("list", help="list policies")
    data_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=guard(cmd_list))
    p = sub.add_parser("remove", help="remove a policy (its intents are withdrawn)")
    data_arg(p)
    p.add_argument("name")
    p.set_defaults(func=guard(cmd_remove))
