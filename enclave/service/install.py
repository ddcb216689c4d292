"""Writing a unit file and handing it to systemd (the shell around enclave.service.units)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from enclave.cert.files import atomic_write
from enclave.service.units import UnitSpec

SYSTEMD_RUNNING_MARK = Path("/run/systemd/system")  # what sd_booted(3) checks
UNIT_FILE_MODE = 0o644

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


class ServiceError(RuntimeError):
    """A unit could not be rendered, written or enabled; the message says why and what to do."""


def systemd_running(mark: Path = SYSTEMD_RUNNING_MARK) -> bool:
    """True when systemd is the init system (sd_booted: /run/systemd/system exists)."""
    return mark.is_dir()


def installed_enclave() -> Path:
    """The installed `enclave` command beside this interpreter (a venv's or a prefix's bin/),
    else the first on PATH; it is what a unit's ExecStart runs."""
    beside = Path(sys.executable).parent / "enclave"
    if beside.is_file():
        return beside
    found = shutil.which("enclave")
    if found is None:
        raise ServiceError("cannot find the installed `enclave` command; pass --exec PATH")
    return Path(found).absolute()


def check_executable(path: Path) -> Path:
    if not path.is_absolute() or not path.is_file() or not os.access(path, os.X_OK):
        raise ServiceError(f"{path} is not an executable file given by its absolute path")
    return path


def check_credential(spec: UnitSpec, credential: Path | None) -> None:
    """A unit that loads an encrypted credential fails to start when the file is missing."""
    if credential is None or credential.is_file():
        return
    raise ServiceError(
        f"encrypted credential {credential} does not exist; create it with\n"
        f"  systemd-ask-password -n | systemd-creds encrypt --name={spec.credential_name} - "
        f"{credential}\n"
        f"(the key must then be encrypted with the same passphrase), or pass --no-credential "
        f"to keep using the key.kek file in the state directory"
    )


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)


@dataclass
class InstallResult:
    path: Path
    systemd: bool
    ran: list[str] = field(default_factory=list)


def install_unit(spec: UnitSpec, text: str, unit_dir: Path, *, enable: bool, now: bool,
                 systemd: bool, run: Runner = _run, instance: str = "") -> InstallResult:
    """Write UNIT_DIR/<unit name>; when systemd runs: daemon-reload, then enable [--now] if asked
    (a template: its ``instance``, which enabling needs). Without systemd the file is written
    and enabling is refused with the reason."""
    target = spec.instance_name(instance)
    if spec.template and not instance and (enable or now):
        raise ServiceError(f"{spec.unit_name} is a template: name the node to enable, "
                           f"e.g. {spec.role}cp1")
    unit_dir.mkdir(parents=True, exist_ok=True)
    path = unit_dir / spec.unit_name
    atomic_write(path, text.encode(), UNIT_FILE_MODE)
    result = InstallResult(path, systemd)
    if not systemd:
        if enable or now:
            raise ServiceError(
                f"wrote {path}, but systemd is not running here ({SYSTEMD_RUNNING_MARK} is "
                f"missing: PID 1 is not systemd), so it cannot be enabled or started; on a "
                f"systemd host run: systemctl enable --now {target}"
            )
        return result
    commands = [["systemctl", "daemon-reload"]]
    if enable or now:
        commands.append(["systemctl", "enable", *(["--now"] if now else []), target])
    for argv in commands:
        res = run(argv)
        result.ran.append(" ".join(argv))
        if res.returncode != 0:
            raise ServiceError(f"`{' '.join(argv)}` failed: {(res.stderr or res.stdout).strip()}")
    return result
