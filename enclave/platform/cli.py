"""`enclave platform ...` commands.

`init` and `serve` set up and run the platform. The admin commands (`keys`, `systems`) open the
store in --data directly, so run them on the platform host (they need no running server); the same
operations are available remotely through the admin HTTP API (see routes_admin.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
from collections.abc import Sequence

from enclave.cert.errors import CertificateError, KeyStoreError
from enclave.logfmt import FORMATS, LOG_FORMAT_ENV, use_format
from enclave.platform.admin import (
    DEFAULT_CERT_LIFETIME,
    create_enrolment_key,
    parse_duration,
    parse_tag_changes,
)
from enclave.platform.cli_nodes import register as register_nodes
from enclave.platform.cli_store import Command, cert_fits, data_paths, with_store
from enclave.platform.cli_urls import register as register_urls
from enclave.platform.errors import ApiError, StoreError
from enclave.platform.gateways import register_systems_gateway
from enclave.platform.init import InitError, init_platform, validate_overlay
from enclave.platform.paths import DATA_ENV, DB_ENV, PlatformPaths, PlatformSettings
from enclave.platform.policy import register as register_policy
from enclave.platform.store import EnrolmentKey, Store, System


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _guard(func: Command) -> Command:
    """Turn expected failures into one clear line on stderr and exit status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ApiError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
        except (StoreError, KeyStoreError, CertificateError, InitError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
        return 1

    return run


# -- init / serve ------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    paths = data_paths(args)
    token, pin = init_platform(
        paths, url=args.url, org=args.org, overlay=validate_overlay(args.overlay), now=_now()
    )
    print(f"platform initialised in {paths.root} (org {args.org}, overlay {args.overlay})")
    print(f"API TLS key fingerprint (sha256 SPKI): {pin}")
    print("admin API token (shown once, store it safely):")
    print(token)
    return 0


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen must be HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def cmd_serve(args: argparse.Namespace) -> int:
    # imported here: keeps `enclave` start-up fast (the server needs aiohttp)
    from enclave.platform.relay_ws import RELAY_TLS_ENV
    from enclave.platform.serve import run

    use_format(args.log_format)
    if args.serve_log_level:
        logging.getLogger().setLevel(args.serve_log_level.upper())
    paths = data_paths(args)
    listen = _listen(args.listen) if args.listen else None
    if args.relay_tls:
        _listen(args.relay_tls)  # checked here: a clear error before anything starts
        os.environ[RELAY_TLS_ENV] = args.relay_tls
    run(paths, listen, args.metrics)
    return 0


# -- keys --------------------------------------------------------------------------------------


def cmd_keys_create(args: argparse.Namespace) -> int:
    async def create(store: Store, _paths: PlatformPaths) -> tuple[EnrolmentKey, str]:
        return await create_enrolment_key(
            store,
            await PlatformSettings.load(store),
            now=int(_now().timestamp()),
            uses=None if args.unlimited else args.uses,
            expires_in=None if args.expires in ("never", "0") else parse_duration(args.expires),
            tags=args.tags,
            approval=args.approval,
            ephemeral=args.ephemeral,
            cert_lifetime=parse_duration(args.cert_lifetime),
        )

    key, token = with_store(args, create)
    if args.json:
        print(json.dumps({"token": token, "key": key.as_json()}))
    else:
        print(token)
    return 0


def _ts(value: int | None) -> str:
    if value is None:
        return "-"
    return datetime.datetime.fromtimestamp(value, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_keys_list(args: argparse.Namespace) -> int:
    keys = with_store(args, lambda store, _paths: store.list_keys())
    if args.json:
        print(json.dumps({"keys": [k.as_json() for k in keys]}))
        return 0
    print(f"{'ID':14} {'USES':>9} {'APPROVAL':8} {'EXPIRES':21} {'STATE':8} TAGS")
    for k in keys:
        uses = f"{k.uses}/{'inf' if k.uses_allowed is None else k.uses_allowed}"
        state = "revoked" if k.revoked_at is not None else "active"
        print(f"{k.id:14} {uses:>9} {k.approval:8} {_ts(k.expires_at):21} {state:8} "
              f"{','.join(k.tags)}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    with_store(args, lambda store, _paths: store.revoke_key(args.id, int(_now().timestamp())))
    print(f"enrolment key {args.id} revoked")
    return 0


# -- systems -----------------------------------------------------------------------------------


def cmd_systems_list(args: argparse.Namespace) -> int:
    systems = with_store(args, lambda store, _paths: store.list_systems())
    if args.json:
        print(json.dumps({"systems": [s.as_json() for s in systems]}))
        return 0
    print(f"{'NAME':8} {'HOSTNAME':20} {'OVERLAY IP':16} {'STATE':9} {'CERT EXPIRES':21} "
          f"{'LAST SEEN':21} TAGS")
    for s in systems:
        print(f"{s.name:8} {s.hostname[:20]:20} {s.overlay_ip!s:16} {s.state:9} "
              f"{_ts(s.cert_not_after):21} {_ts(s.last_seen):21} {','.join(s.tags)}")
    return 0


def _system_command(action: str) -> Command:
    def run(args: argparse.Namespace) -> int:
        changes: list[str] = list(getattr(args, "changes", []))
        if "--data" in changes[:-1]:  # nargs=REMAINDER swallows a trailing --data DIR
            i = changes.index("--data")
            args.data = changes[i + 1]
            del changes[i : i + 2]
        if action == "tag" and not changes:
            raise ValueError("give tag changes like +web -db")
        now = int(_now().timestamp())

        async def change(store: Store, paths: PlatformPaths) -> tuple[System | None, list[str]]:
            if action == "approve":
                return await store.approve(args.name), []
            if action == "disable":
                return await store.disable(args.name, now), []
            if action == "enable":
                return await store.enable(args.name), []
            if action == "revoke":
                return await store.revoke(args.name, now), []
            if action == "remove":
                return None, await store.remove(args.name, now)
            add, remove = parse_tag_changes(changes)
            fits = await cert_fits(paths, store)
            return await store.set_tags(args.name, add, remove, fits=fits), []

        result, dropped = with_store(args, change)
        if result is None:
            also = f"; gateway policies removed with it: {', '.join(dropped)}" if dropped else ""
            print(f"system {args.name} removed (its certificates are revoked){also}")
        else:
            print(f"system {result.name}: {result.state}, tags {','.join(result.tags) or '-'}")
        return 0

    return run


# -- parser ------------------------------------------------------------------------------------


def _data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="DIR", default=None,
                   help=f"platform data directory (default: ${DATA_ENV})")
    p.add_argument("--db", metavar="URL", default=None,
                   help="keep the store in PostgreSQL: postgresql://USER@HOST/DB "
                   f"(default: ${DB_ENV}, else SQLite in the data directory)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    platform = sub.add_parser(
        "platform",
        help="run and administer the control plane (CA, enrolment, API)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    psub = platform.add_subparsers(dest="platform_command", metavar="COMMAND", required=True)

    p = psub.add_parser("init", help="create the CA, API TLS identity, store and admin token")
    _data_arg(p)
    p.add_argument("--url", required=True, action="append",
                   help="https://HOST:PORT that agents will use; repeat it for each node of a "
                   "platform on one --db (the token carries all; agents fail over along them)")
    p.add_argument("--org", default="default", help="organisation name (default: default)")
    p.add_argument("--overlay", default="100.64.0.0/10", help="overlay IPv4 range")
    p.set_defaults(func=_guard(cmd_init))

    p = psub.add_parser("serve", help="run the HTTPS API until SIGTERM")
    _data_arg(p)
    p.add_argument("--listen", metavar="HOST:PORT", help="default: 0.0.0.0 and the URL's port")
    p.add_argument("--metrics", metavar="HOST:PORT", default=None,
                   help="serve Prometheus metrics at http://HOST:PORT/metrics "
                   "(also ENCLAVE_PLATFORM_METRICS; default off)")
    p.add_argument("--relay-tls", metavar="HOST:PORT", default=None,
                   help="also serve on this TLS port (e.g. 443; the relay over TLS, /v1/relay, "
                   "and the API) besides --listen (also $ENCLAVE_PLATFORM_RELAY_TLS; default: "
                   "only the API port)")
    p.add_argument("--log-level", dest="serve_log_level", default=None,
                   choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=FORMATS, default=None,
                   help=f"log lines as text or one JSON object each (default: ${LOG_FORMAT_ENV}"
                   " or text)")
    p.set_defaults(func=_guard(cmd_serve))

    keys = psub.add_parser("keys", help="enrolment keys (operates on the store in --data)")
    ksub = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    p = ksub.add_parser("create", help="create an enrolment key and print its token")
    _data_arg(p)
    uses = p.add_mutually_exclusive_group()
    uses.add_argument("--uses", type=int, default=1, help="number of enrolments (default 1)")
    uses.add_argument("--unlimited", action="store_true", help="no limit on enrolments")
    p.add_argument("--expires", default="24h", help="key lifetime, e.g. 24h, 7d, never")
    p.add_argument("--tags", default="", help="comma-separated tags for enrolled systems")
    p.add_argument("--approval", choices=["auto", "gated"], default="auto")
    p.add_argument("--ephemeral", action="store_true", help="mark enrolled systems ephemeral")
    p.add_argument("--cert-lifetime", default=f"{DEFAULT_CERT_LIFETIME // 86400}d",
                   help="lifetime of issued certificates (default 30d)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_guard(cmd_keys_create))
    p = ksub.add_parser("list", help="list enrolment keys")
    _data_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_guard(cmd_keys_list))
    p = ksub.add_parser("revoke", help="revoke an enrolment key")
    _data_arg(p)
    p.add_argument("id")
    p.set_defaults(func=_guard(cmd_keys_revoke))

    systems = psub.add_parser("systems", help="enrolled systems (operates on the store in --data)")
    ssub = systems.add_subparsers(dest="systems_command", metavar="COMMAND", required=True)
    p = ssub.add_parser("list", help="list systems")
    _data_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_guard(cmd_systems_list))
    helps = {
        "approve": "approve a pending system (it can then fetch its certificate)",
        "disable": "suspend a system (certificates on hold in the revocation list)",
        "enable": "lift a suspension",
        "revoke": "revoke a system permanently (certificates revoked)",
        "remove": "revoke and delete a system",
    }
    for action, text in helps.items():
        p = ssub.add_parser(action, help=text)
        _data_arg(p)
        p.add_argument("name")
        p.set_defaults(func=_guard(_system_command(action)))
    p = ssub.add_parser("tag", help="change tags: NAME +a -b (the next certificate carries them)")
    _data_arg(p)
    p.add_argument("name")
    p.add_argument("changes", nargs=argparse.REMAINDER, metavar="+TAG|-TAG")
    p.set_defaults(func=_guard(_system_command("tag")))
    register_systems_gateway(ssub, _data_arg, _guard)
    register_policy(psub, _data_arg, _guard)
    register_urls(psub, _data_arg, _guard)
    register_nodes(psub, _data_arg, _guard)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `enclave platform ...` without the other command groups (used by tests)."""
    parser = argparse.ArgumentParser(prog="enclave")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


