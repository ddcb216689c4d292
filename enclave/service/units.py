"""systemd units for the agent and the platform, rendered as text (no I/O here).

Both run as root with a small capability bounding set rather than as a separate user: the
state they read (`enclave enrol`'s and `enclave platform init`'s 0600 files) is root's, the
agent's helpers (nft, sysctl) inherit root with only the bounded capabilities, and
systemd-resolved accepts the agent's `~enclave` routing from root without a polkit rule.
Root without CAP_DAC_OVERRIDE reaches only root-owned files; ProtectSystem=strict leaves just
the StateDirectory= and RuntimeDirectory= writable.

agent (`enclave up`, Type=notify: it sends READY=1 once its sockets are up):
    CAP_NET_ADMIN         TAP device (TUNSETIFF), addresses and routes (netlink), nftables for
                          gateways, SO_MARK, SO_RCVBUFFORCE/SO_SNDBUFFORCE, ip_forward
    CAP_NET_RAW           raw sockets (kept as the issue's minimum set)
    CAP_NET_BIND_SERVICE  the NAME.enclave DNS server on port 53 of the overlay IP
    /dev/net/tun          the only device it opens (DevicePolicy=closed + DeviceAllow=)
    AF_NETLINK            pyroute2 and nft speak netlink; AF_UNIX for the local API socket,
                          sd_notify and systemd-resolved; AF_INET/AF_INET6 for the data plane
    /proc/sys writable    a gateway switches on net.ipv4.ip_forward (no ProtectKernelTunables=)
platform (`enclave platform serve`, Type=exec):
    CAP_NET_BIND_SERVICE  only needed to listen on a port below 1024 (e.g. 443)
platform@ (a template: one instance per node of a platform on one PostgreSQL database):
    enclave-platform@NAME.service runs `platform serve --data /var/lib/enclave-platform/NAME
    --listen $ENCLAVE_PLATFORM_LISTEN` with the node's settings from /etc/enclave/platform-NAME.env
    (ENCLAVE_PLATFORM_LISTEN=HOST:PORT, ENCLAVE_PLATFORM_DB=postgresql://..., and any other
    ENCLAVE_PLATFORM_* setting), so several nodes can share a host on different addresses; the
    same hardening and credential as the platform unit (every node needs the same key-encryption
    key).

The private key's passphrase comes as an encrypted systemd credential
(LoadCredentialEncrypted=NAME:/etc/credstore.encrypted/NAME), read by enclave.cert.keystore
from $CREDENTIALS_DIRECTORY/NAME; without it (credential=None) the key.kek file in the
state directory is used, as when run by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from enclave.agent.localapi import DEFAULT_RUN_DIR
from enclave.agent.state import DEFAULT_STATE_DIR
from enclave.cert.keystore import AGENT_CREDENTIAL, PLATFORM_CREDENTIAL

ROLES = ("agent", "platform", "platform@")
CREDSTORE = Path("/etc/credstore.encrypted")
PLATFORM_DATA_DIR = "/var/lib/enclave-platform"
NODE_ENV_FILE = "/etc/enclave/platform-%i.env"  # a platform@ instance's settings (%i: NAME)
NODE_LISTEN_ENV = "ENCLAVE_PLATFORM_LISTEN"  # in NODE_ENV_FILE: the node's --listen HOST:PORT
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")

HOME_DIRS = (PurePosixPath("/home"), PurePosixPath("/root"), PurePosixPath("/run/user"))

_COMMON_HARDENING = (
    ("ProtectSystem", "strict"),
    ("PrivateTmp", "yes"),
    ("NoNewPrivileges", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("ProtectClock", "yes"),
    ("ProtectHostname", "yes"),
    ("RestrictNamespaces", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("LockPersonality", "yes"),
    ("SystemCallArchitectures", "native"),
    ("SystemCallFilter", "@system-service"),
    ("SystemCallErrorNumber", "EPERM"),
    ("UMask", "0077"),
)


@dataclass(frozen=True)
class UnitSpec:
    """What differs between the two units."""

    role: str
    description: str
    service_type: str
    args: tuple[str, ...]
    state_directory: str
    credential_name: str
    capabilities: tuple[str, ...]
    address_families: tuple[str, ...]
    extra: tuple[tuple[str, str], ...]

    @property
    def template(self) -> bool:
        """A template unit (enclave-ROLE@.service): one instance per name."""
        return self.role.endswith("@")

    @property
    def unit_name(self) -> str:
        return f"enclave-{self.role}.service"

    def instance_name(self, instance: str) -> str:
        """The unit systemctl enables: the instance of a template, else the unit itself."""
        return f"enclave-{self.role}{instance}.service" if self.template else self.unit_name

    @property
    def credential_path(self) -> Path:
        return CREDSTORE / self.credential_name


def _dir_name(path: str, parent: str) -> str:
    """'/var/lib/enclave' below '/var/lib' -> 'enclave' (what StateDirectory= etc. take)."""
    return str(PurePosixPath(path).relative_to(parent))


AGENT = UnitSpec(
    role="agent",
    description="enclave agent (peer-to-peer L2 overlay)",
    service_type="notify",
    args=("up", "--state", DEFAULT_STATE_DIR),
    state_directory=_dir_name(DEFAULT_STATE_DIR, "/var/lib"),
    credential_name=AGENT_CREDENTIAL,
    capabilities=("CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"),
    address_families=("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"),
    extra=(
        ("RuntimeDirectory", _dir_name(DEFAULT_RUN_DIR, "/run")),
        ("RuntimeDirectoryMode", "0700"),
        ("DevicePolicy", "closed"),
        ("DeviceAllow", "/dev/net/tun rw"),
    ),
)

PLATFORM = UnitSpec(
    role="platform",
    description="enclave platform (control plane: CA, enrolment, discovery, relay)",
    service_type="exec",
    args=("platform", "serve", "--data", PLATFORM_DATA_DIR),
    state_directory=_dir_name(PLATFORM_DATA_DIR, "/var/lib"),
    credential_name=PLATFORM_CREDENTIAL,
    capabilities=("CAP_NET_BIND_SERVICE",),
    address_families=("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"),
    extra=(
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
    ),
)

PLATFORM_NODE = UnitSpec(
    role="platform@",
    description="enclave platform node %i (control plane: CA, enrolment, discovery, relay)",
    service_type="exec",
    args=("platform", "serve", "--data", f"{PLATFORM_DATA_DIR}/%i",
          "--listen", f"${{{NODE_LISTEN_ENV}}}"),
    state_directory=f"{_dir_name(PLATFORM_DATA_DIR, '/var/lib')}/%i",
    credential_name=PLATFORM_CREDENTIAL,
    capabilities=PLATFORM.capabilities,
    address_families=PLATFORM.address_families,
    extra=(("EnvironmentFile", NODE_ENV_FILE), *PLATFORM.extra),
)

SPECS = {spec.role: spec for spec in (AGENT, PLATFORM, PLATFORM_NODE)}
INSTANCE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def spec_for(role: str) -> UnitSpec:
    try:
        return SPECS[role]
    except KeyError:
        raise ValueError(f"unknown service {role!r} (one of: {', '.join(ROLES)})") from None


def parse_role(text: str) -> tuple[UnitSpec, str]:
    """'agent', 'platform', 'platform@' or 'platform@NAME' -> (spec, instance name or '')."""
    role, at, instance = text.partition("@")
    spec = spec_for(role + at)
    if instance and (len(instance) > 64 or not set(instance) <= INSTANCE_CHARS):
        raise ValueError(f"instance name {instance!r}: up to 64 letters, digits, '-', '_', '.'")
    return spec, instance


def render_unit(spec: UnitSpec, executable: Path, *, credential: Path | None) -> str:
    """The unit file text. ``executable`` is the installed `enclave` command (absolute);
    ``credential`` the encrypted passphrase file, or None to use the state directory's
    key.kek."""
    if not executable.is_absolute():
        raise ValueError(f"the unit needs an absolute path to enclave, got {executable}")
    service: list[tuple[str, str]] = [
        ("Type", spec.service_type),
        ("ExecStart", " ".join([str(executable), *spec.args])),
        ("Restart", "on-failure"),
        ("RestartSec", "5"),
        ("StateDirectory", spec.state_directory),
        ("StateDirectoryMode", "0700"),
    ]
    if credential is not None:
        service.append(("LoadCredentialEncrypted", f"{spec.credential_name}:{credential}"))
    # ProtectHome=yes hides /home, /root and /run/user: an enclave installed there (a
    # developer's pyenv) must stay reachable, read-only.
    in_home = any(PurePosixPath(executable).is_relative_to(d) for d in HOME_DIRS)
    service += [
        ("ProtectHome", "read-only" if in_home else "yes"),
        ("CapabilityBoundingSet", " ".join(spec.capabilities)),
        ("RestrictAddressFamilies", " ".join(spec.address_families)),
        *spec.extra,
        *_COMMON_HARDENING,
    ]
    lines = [
        f"# {spec.unit_name}: written by `enclave service unit {spec.role}`",
        "[Unit]",
        f"Description={spec.description}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        *(f"{key}={value}" for key, value in service),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"
