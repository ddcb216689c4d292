"""`enclave bench peer NAME` between two real agents, and `enclave bench serve` for the far side.

On the peer, run `enclave bench serve` (iperf3 -s on 5201 + the UDP echo on 5312), or at least
`iperf3 -s`. Then here: `enclave bench peer NAME [--state DIR]`. The peer's overlay IP and its
underlay endpoint come from the running agent (`enclave peers --json`). Throughput (iperf3, both
directions) and latency (UDP ping-pong; needs the echo of `bench serve`) are measured over the
overlay, and over the underlay endpoint's address when that answers (no NAT in the way, or the
ports forwarded); what cannot be reached is reported as not measured.
"""

from __future__ import annotations

import ipaddress
import shutil
import signal
import threading
import time
from typing import Any

from enclave.bench import flows
from enclave.bench.report import Figure, Report
from enclave.bench.runner import missing_agent_commands, parse_peers
from enclave.spawn import enclave_argv


class PeerBenchError(RuntimeError):
    pass


def _ip(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    host = value
    if value.count(":") == 1:  # ip:port
        host = value.rsplit(":", 1)[0]
    host = host.strip("[]").split("/")[0]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def find_peer(peers: list[dict[str, Any]], name: str,
              overlay_ip: str | None = None) -> tuple[str, str | None]:
    """(overlay IP, underlay IP or None) of ``name`` in `enclave peers --json` output.

    ``overlay_ip`` (from --overlay-ip) is used when the agent does not report one."""
    for peer in peers:
        if peer.get("name") != name:
            continue
        overlay = _ip(peer.get("overlay_ip")) or _ip(peer.get("ip")) or _ip(overlay_ip)
        if overlay is None:
            raise PeerBenchError(f"peer {name} has no overlay_ip in `enclave peers --json` "
                                 "(pass --overlay-ip)")
        return overlay, _ip(peer.get("endpoint"))
    raise PeerBenchError(f"no peer named {name!r} (is there mutual intent, and is it connected?)")


def run(name: str, *, state: str | None, duration: float, ping_count: int = 100,
        place: Any = None, overlay_ip: str | None = None) -> Report:
    missing = missing_agent_commands()
    if "peers" in missing:
        raise PeerBenchError("needs a running agent: `enclave peers` is not available yet")
    if shutil.which("iperf3") is None:
        raise PeerBenchError("iperf3 is not installed (apt-get install iperf3)")
    local = place or flows.LocalPlace()
    argv = ["peers", "--json"] + (["--state", state] if state else [])
    res = local.run(enclave_argv(*argv), timeout=30)
    if res.returncode != 0:
        raise PeerBenchError(f"enclave peers: {res.stderr.strip()[-300:]}")
    overlay_ip, underlay_ip = find_peer(parse_peers(res.stdout), name, overlay_ip)
    report = Report(meta={"peer": name, "overlay_ip": overlay_ip,
                          "underlay_ip": underlay_ip or "-", "duration_s": duration})
    targets = [("overlay", overlay_ip)] + ([("raw", underlay_ip)] if underlay_ip else [])
    for path, ip in targets:
        t0 = time.monotonic()
        errors: list[str] = []
        for streams in (1, 4):
            for reverse in (False, True):
                label = (f"TCP {streams} stream{'s' if streams > 1 else ''} "
                         f"{'peer->here' if reverse else 'here->peer'}")
                key = f"tcp{streams}_{'ba' if reverse else 'ab'}"
                try:
                    r = flows.tcp_throughput(local, ip, duration=duration, streams=streams,
                                             reverse=reverse)
                    value: float | None = r.gbit_s
                except flows.FlowError as exc:
                    errors.append(f"{label}: {exc}")
                    value = None
                _set(report, path, key, "throughput", label, "Gbit/s", value, True)
        try:
            lat = flows.latency(local, ip, count=ping_count, timeout=0.5)
            if lat.received:
                _set(report, path, "rtt_p50", "latency", "RTT p50 idle", "us", lat.p50_us, False)
                _set(report, path, "rtt_p99", "latency", "RTT p99 idle", "us", lat.p99_us, False)
            else:
                errors.append("latency: no echo (run `enclave bench serve` on the peer)")
        except flows.FlowError as exc:
            errors.append(f"latency: {exc}")
        measured = any((f.overlay if path == "overlay" else f.raw) is not None
                       for f in report.figures)
        status = "ok" if measured else "failed"
        report.stage(f"flows {path}", status, "; ".join(errors), time.monotonic() - t0)
    if underlay_ip is None:
        report.stage("flows raw", "unavailable", "the agent reports no endpoint for this peer")
    return report


def _set(report: Report, path: str, key: str, group: str, label: str, unit: str,
         value: float | None, higher: bool) -> None:
    fig = report.figure(key)
    if fig is None:
        fig = Figure(key, group, label, unit, None, None, None, higher)
        report.figures.append(fig)
    if path == "overlay":
        fig.overlay = value
    else:
        fig.raw = value


def serve(lifetime: float | None = None) -> int:
    """Run iperf3 -s and the UDP echo until SIGTERM/Ctrl-C (or ``lifetime`` s)."""
    if shutil.which("iperf3") is None:
        raise PeerBenchError("iperf3 is not installed (apt-get install iperf3)")
    place = flows.LocalPlace()
    done = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        flows.start_iperf3_server(place)
        echo = flows.start_echo_server(place)
        print(f"serving: iperf3 on tcp/{flows.IPERF_PORT}, UDP echo on udp/{flows.ECHO_PORT} "
              "(Ctrl-C to stop)", flush=True)
        try:
            while not done.wait(0.5):
                if lifetime is not None and lifetime <= 0:
                    break
                if lifetime is not None:
                    lifetime -= 0.5
                if echo.poll() is not None:
                    raise PeerBenchError("the UDP echo exited")
        except KeyboardInterrupt:
            pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        place.close()
    return 0

