"""Tag policies (managed mode): `enclave platform policy add|list|remove`.

    enclave platform policy add --name web-db --from tag:web --to tag:db

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
from collections.abc import Callable

from enclave.cert.names import is_valid_system_name, is_valid_tag
from enclave.policy.intent import is_valid_policy_name

Command = Callable[[argparse.Namespace], int]


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


def register(psub: argparse._SubParsersAction, data_arg: Callable[[argparse.ArgumentParser], None],
             guard: Callable[[Command], Command]) -> None:  # type: ignore[type-arg,unused-ignore]
    from enclave.platform.cli import _paths

    def cmd_add(args: argparse.Namespace) -> int:
        from enclave.policy.gateway import parse_acl, parse_routes

        if (args.to_sel is None) == (args.gateway is None):
            raise ValueError("give --to SELECTOR, or --gateway NAME --routes CIDR,...")
        gw: dict[str, object] = {}
        if args.gateway is not None:
            if not is_valid_system_name(args.gateway) or not args.routes:
                raise ValueError("--gateway needs a system name and --routes CIDR,...")
            args.to_sel = f"name:{args.gateway}"
            gw = {"gateway": args.gateway,
                  "routes": tuple(str(r) for r in parse_routes(args.routes)),
                  "acl": tuple(str(a) for a in parse_acl(args.acl))}
        elif args.routes or args.acl:
            raise ValueError("--routes and --acl belong to gateway policies (--gateway NAME)")
        validate_policy(args.name, args.from_sel, args.to_sel)
        store = _paths(args).open_store()
        try:
            now = int(datetime.datetime.now(datetime.UTC).timestamp())
            if args.gateway is not None:
                store.get_system(args.gateway)  # 404 for a typo
            store.add_policy(args.name, args.from_sel, args.to_sel, now, **gw)  # type: ignore[arg-type]
        finally:
            store.close()
        if gw:
            print(f"policy {args.name}: {args.from_sel} -> gateway {args.gateway} "
                  f"routes {','.join(gw['routes'])} acl {','.join(gw['acl'])}")  # type: ignore[arg-type]
        else:
            print(f"policy {args.name}: {args.from_sel} <-> {args.to_sel}")
        return 0

    def cmd_list(args: argparse.Namespace) -> int:
        store = _paths(args).open_store()
        try:
            rows = store.list_policies()
        finally:
            store.close()
        if args.json:
            print(json.dumps({"policies": [{"name": n, "from": f, "to": t, "created_at": c}
                                           for n, f, t, c in rows]}))
        else:
            for n, f, t, _c in rows:
                print(f"{n:24} {f} <-> {t}")
        return 0

    def cmd_remove(args: argparse.Namespace) -> int:
        store = _paths(args).open_store()
        try:
            store.remove_policy(args.name)
        finally:
            store.close()
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
