"""`enclave info [--json]`: what this host's data plane will run with.

Exit status: 0 when the compiled fast path is loaded; 1 when it is not. There is no Python
data path to fall back to, so a missing extension is reported, never papered over.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from typing import Any

from enclave import __version__


def gather(configured_cipher: str | None = None) -> dict[str, Any]:
    """Collect the report as a JSON-serialisable dict."""
    # imported here: keeps `enclave` start-up fast (sysinfo loads importlib.metadata, ctypes)
    from enclave import sysinfo

    cpu = sysinfo.cpu_info()
    report: dict[str, Any] = {
        "version": __version__,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "pynacl": sysinfo.pynacl_version(),
        "libsodium": sysinfo.libsodium_version(),
        "libsodium_path": None,
        "fastpath": False,
        "fastpath_error": None,
        "cpu_model": cpu.model,
        "cpu_arch": cpu.arch,
        "cpu_flags": cpu.crypto_flags(),
        "sodium_flags": None,
        "cipher": None,
        "cipher_reason": None,
        "cipher_fallback": None,
        "aegis256": {"available": False, "allowed": False},
        "kernel_features": sysinfo.kernel_features(),
        "cores": sysinfo.usable_cores(),
        "threads_default": sysinfo.default_threads(),
        "threads_default_cap": sysinfo.MAX_DEFAULT_THREADS,
    }
    try:
        # imported here: keeps `enclave` start-up fast; a build without it is reported below
        from enclave import _fastpath
    except ImportError as e:
        report["fastpath_error"] = str(e)
        return report
    # imported here: keeps `enclave` start-up fast (cipher loads sysinfo)
    from enclave.cipher import CipherError, aegis_runs_here, select_cipher

    report["fastpath"] = True
    report["libsodium_path"] = _fastpath.SODIUM_PATH
    report["sodium_flags"] = _fastpath.sodium_runtime_flags()
    # available: libsodium runs it on AES-NI here; allowed: this configuration offers it to
    # peers (`--cipher aegis256`); a pair uses it only when both sides offer it
    report["aegis256"]["available"] = aegis_runs_here(report["sodium_flags"])
    try:
        choice = select_cipher(
            configured_cipher, cpu_flags=report["cpu_flags"], sodium_flags=report["sodium_flags"]
        )
    except CipherError as e:
        report["cipher_reason"] = f"error: {e}"
    else:
        report["cipher"] = choice.cipher
        report["cipher_reason"] = choice.reason
        report["cipher_fallback"] = choice.fallback
        report["aegis256"]["allowed"] = choice.aegis_allowed
    return report


def _yes(value: Any) -> str:
    if value is True:
        return "[green]yes[/]"
    if value is False:
        return "[red]no[/]"
    return str(value)


def _flags(flags: dict[str, bool] | None) -> str:
    if not flags:
        return "-"
    return " ".join(f"[green]{k}[/]" if v else f"[dim]-{k}[/]" for k, v in flags.items())


def render(report: dict[str, Any]) -> None:
    """Print the report as a rich table."""
    # imported here: keeps `enclave` start-up fast (rich is only needed to show a report)
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="enclave info", show_header=False, title_justify="left")
    table.add_column("item", style="bold")
    table.add_column("value")
    table.add_row("version", escape(report["version"]))
    table.add_row("python", escape(report["python"]))
    table.add_row("libsodium", escape(f"{report['libsodium']} (PyNaCl {report['pynacl']})"))
    if report["fastpath"]:
        table.add_row("fast path", "[green]loaded[/] " + escape(str(report["libsodium_path"])))
    else:
        table.add_row("fast path", "[red]NOT LOADED[/] " + escape(str(report["fastpath_error"])))
    table.add_row("cpu", escape(f"{report['cpu_model']} ({report['cpu_arch']})"))
    table.add_row("cpu flags", _flags(report["cpu_flags"]))
    table.add_row("libsodium flags", _flags(report["sodium_flags"]))
    cipher = report["cipher"] or "[red]none[/]"
    table.add_row("cipher", f"[bold]{cipher}[/] — {escape(str(report['cipher_reason']))}")
    aegis = report["aegis256"]
    table.add_row("aegis256", f"available {_yes(aegis['available'])}, allowed "
                  f"{_yes(aegis['allowed'])} (opt-in: `--cipher aegis256` on both sides)")
    kf = report["kernel_features"]
    table.add_row("kernel", escape(kf["kernel"]))
    tun = kf["tun"]
    table.add_row("tun features", _flags(tun) if isinstance(tun, dict) else escape(tun))
    tap = kf["tap_offload"]
    table.add_row("tap offload", _flags(tap) if isinstance(tap, dict) else escape(tap))
    table.add_row("udp offload", _flags(kf["udp"]))
    mq = tun.get("multi_queue") if isinstance(tun, dict) else None
    table.add_row("data-plane workers",
                  f"{report['threads_default']} by default ({report['cores']} cores, at most "
                  f"{report['threads_default_cap']}; `enclave up --threads N`), multi-queue TAP "
                  f"{_yes(mq)}")
    Console().print(table)


def run(args: argparse.Namespace) -> int:
    report = gather(getattr(args, "cipher", None))
    if args.json:
        json.dump(report, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        render(report)
    if not report["fastpath"]:
        print(
            f"enclave: compiled fast path not loaded: {report['fastpath_error']}\n"
            "enclave: build it with `python setup.py build_ext --inplace` or reinstall",
            file=sys.stderr,
        )
        return 1
    return 0 if report["cipher"] else 1


def register(sub: Any) -> None:
    parser = sub.add_parser("info", help="show versions, CPU, cipher choice and kernel features")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--cipher",
        default=None,
        help="cipher as the configuration would set it (auto|aes256gcm|chacha20poly1305|"
        "aegis256); ENCLAVE_CIPHER overrides it",
    )
    parser.set_defaults(func=run)
