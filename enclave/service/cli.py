"""`enclave service unit|install agent|platform`: run the agent or the platform under systemd.

    enclave service unit agent                 print the unit (ExecStart: the installed enclave)
    enclave service install agent --now        write /etc/systemd/system/enclave-agent.service,
                                               daemon-reload, enable --now
    enclave service install platform --unit-dir DIR [--enable]
    enclave service unit platform@             the template for several nodes on one database
    enclave service install platform@cp1 --now enclave-platform@.service, enable --now
                                               enclave-platform@cp1.service (its settings in
                                               /etc/enclave/platform-cp1.env)

--no-credential leaves out LoadCredentialEncrypted= (the key passphrase then comes from the
state directory's key.kek, as when run by hand); --credential PATH names the encrypted file
(default /etc/credstore.encrypted/<credential name>). Exit status: 0 done, 1 with the reason.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from enclave.service.install import (
    ServiceError,
    check_credential,
    check_executable,
    install_unit,
    installed_enclave,
    systemd_running,
)
from enclave.service.units import (
    NODE_ENV_FILE,
    NODE_LISTEN_ENV,
    ROLES,
    SYSTEM_UNIT_DIR,
    UnitSpec,
    parse_role,
    render_unit,
)


def _unit_text(args: argparse.Namespace) -> tuple[UnitSpec, str, Path | None]:
    spec, _instance = parse_role(args.role)
    executable = check_executable(Path(args.exec)) if args.exec else installed_enclave()
    credential = None if args.no_credential else Path(args.credential or spec.credential_path)
    return spec, render_unit(spec, executable, credential=credential), credential


def cmd_unit(args: argparse.Namespace) -> int:
    try:
        _spec, text, _credential = _unit_text(args)
    except (ServiceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    try:
        spec, text, credential = _unit_text(args)
        _spec, instance = parse_role(args.role)
        check_credential(spec, credential)
        running = systemd_running()
        result = install_unit(spec, text, Path(args.unit_dir), enable=args.enable,
                              now=args.now, systemd=running, instance=instance)
    except (ServiceError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {result.path}")
    for command in result.ran:
        print(f"ran {command}")
    if not result.systemd:
        print(f"systemd is not running here (PID 1 is not systemd): not reloaded or enabled; "
              f"on a systemd host run: systemctl daemon-reload && "
              f"systemctl enable --now {spec.instance_name(instance or 'NAME')}")
    if spec.template:
        env = NODE_ENV_FILE.replace("%i", instance or "NAME")
        print(f"each node's settings: {env} with {NODE_LISTEN_ENV}=HOST:PORT and "
              f"ENCLAVE_PLATFORM_DB=postgresql://...")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("role", metavar="|".join((*ROLES, "platform@NAME")),
                   help="platform@ is the template for several nodes (instance: the node's "
                        "name)")
    p.add_argument("--exec", metavar="PATH", default=None,
                   help="the enclave command for ExecStart (default: the installed one)")
    cred = p.add_mutually_exclusive_group()
    cred.add_argument("--credential", metavar="PATH", default=None,
                      help="encrypted passphrase credential (default: /etc/credstore.encrypted/"
                           "enclave-key-passphrase, resp. enclave-platform-key-passphrase)")
    cred.add_argument("--no-credential", action="store_true",
                      help="no LoadCredentialEncrypted=: the key.kek file holds the passphrase")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    service = sub.add_parser("service", help="systemd units for the agent and the platform "
                                             "(and one per platform node)",
                             description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    ssub = service.add_subparsers(dest="service_command", metavar="COMMAND", required=True)
    p = ssub.add_parser("unit", help="print the systemd unit")
    _common(p)
    p.set_defaults(func=cmd_unit)
    p = ssub.add_parser("install", help="write the unit (and enable it where systemd runs)")
    _common(p)
    p.add_argument("--unit-dir", metavar="DIR", default=str(SYSTEM_UNIT_DIR),
                   help=f"where to write the unit (default {SYSTEM_UNIT_DIR})")
    p.add_argument("--enable", action="store_true", help="systemctl enable the unit")
    p.add_argument("--now", action="store_true", help="enable and start it now")
    p.set_defaults(func=cmd_install)
