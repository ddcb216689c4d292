"""One flow = one measurement between a client place and a server place.

A *place* is where a process runs: a netlab Host (its namespace) or this machine (LocalPlace).
Both offer ``run(argv, timeout=...)`` and ``popen(argv, **kw)``; the caller owns the lifetime of
what popen starts (netlab kills it at teardown; LocalPlace.close() kills its own).

    tcp_throughput   iperf3 -c ... --json (server: iperf3 -s started by start_iperf3_server);
                     Gbit/s on the receiver side, both directions via -R
    udp_rate         udpgen recv on the server, udpgen send on the client; receiver counts
    latency          udpgen echo on the server, udpgen ping on the client; p50/p99 in us
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from enclave.spawn import module_argv

IPERF_PORT = 5201
UDPGEN_PORT = 5311
ECHO_PORT = 5312
BENCH_UDP_PORTS = (IPERF_PORT, UDPGEN_PORT, ECHO_PORT)  # forwarded on the lab NATs (raw path)


class FlowError(RuntimeError):
    """A flow could not be measured; the message says why (tool output included)."""


class Place(Protocol):
    def run(self, cmd: Sequence[str], *, check: bool = False, timeout: float = 30.0,
            **kwargs: Any) -> subprocess.CompletedProcess[Any]: ...

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]: ...


class LocalPlace:
    """This machine; processes started here are killed by close()."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []

    def run(self, cmd: Sequence[str], *, check: bool = False, timeout: float = 30.0,
            **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        if "stdout" not in kwargs and "stderr" not in kwargs:
            kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(list(cmd), check=check, timeout=timeout, **kwargs)

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs["start_new_session"] = True
        proc = subprocess.Popen(list(cmd), **kwargs)
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        procs, self._procs = self._procs, []
        for proc in procs:
            stop(proc)


def stop(proc: subprocess.Popen[Any], grace: float = 2.0) -> None:
    """SIGTERM the process group, then SIGKILL; reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def read_json_line(proc: subprocess.Popen[Any], timeout: float) -> dict[str, Any]:
    """Read the next JSON line from a text-mode popen's stdout within ``timeout`` s."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise FlowError(f"no output from {proc.args!r} within {timeout:.0f}s")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read() if proc.stderr is not None else ""
            raise FlowError(f"{proc.args!r} exited ({proc.poll()}): {err.strip()[-400:]}")
        line = line.strip()
        if line.startswith("{"):
            data: dict[str, Any] = json.loads(line)
            return data


# -- iperf3 ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Iperf3Result:
    """Summary of one iperf3 TCP test (receiver-side figures are the ones reported)."""

    receiver_bps: float
    sender_bps: float
    receiver_bytes: int
    seconds: float
    retransmits: int | None
    streams: int
    reverse: bool

    @property
    def gbit_s(self) -> float:
        return self.receiver_bps / 1e9


def parse_iperf3(text: str) -> Iperf3Result:
    """Parse `iperf3 --json` client output of a TCP test; raises FlowError on an iperf3 error."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FlowError(f"iperf3 printed no JSON: {text.strip()[:200]!r}") from exc
    if not isinstance(data, dict):
        raise FlowError("iperf3 JSON is not an object")
    if data.get("error"):
        raise FlowError(f"iperf3: {data['error']}")
    end = data.get("end") or {}
    recv = end.get("sum_received")
    sent = end.get("sum_sent")
    if not isinstance(recv, dict) or not isinstance(sent, dict):
        raise FlowError("iperf3 JSON has no end.sum_received / end.sum_sent (not a TCP test?)")
    test = (data.get("start") or {}).get("test_start") or {}
    return Iperf3Result(
        receiver_bps=float(recv["bits_per_second"]),
        sender_bps=float(sent["bits_per_second"]),
        receiver_bytes=int(recv["bytes"]),
        seconds=float(recv["seconds"]),
        retransmits=int(sent["retransmits"]) if "retransmits" in sent else None,
        streams=int(test.get("num_streams", len(end.get("streams") or []) or 1)),
        reverse=bool(test.get("reverse", 0)),
    )


def start_iperf3_server(place: Place, port: int = IPERF_PORT) -> subprocess.Popen[Any]:
    proc = place.popen(["iperf3", "-s", "-p", str(port)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return proc


def tcp_throughput(client: Place, server_ip: str, *, duration: float, streams: int = 1,
                   reverse: bool = False, port: int = IPERF_PORT,
                   during: Callable[[], None] | None = None) -> Iperf3Result:
    """iperf3 TCP from ``client`` to ``server_ip`` (reverse: server sends). Retries while the
    server is still starting (iperf3 -s needs a moment)."""
    argv = ["iperf3", "-c", server_ip, "-p", str(port), "-t", f"{max(1, round(duration))}",
            "-P", str(streams), "--json", "--connect-timeout", "3000"]
    if reverse:
        argv.append("-R")
    last = ""
    for attempt in range(5):
        if during is None:
            res = client.run(argv, timeout=duration + 30)
            out = res.stdout
        else:
            proc = client.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                during()
                out, _ = proc.communicate(timeout=duration + 30)
            finally:
                stop(proc)
        try:
            return parse_iperf3(out)
        except FlowError as exc:
            last = str(exc)
            if "busy" in last or "connect" in last.lower():
                time.sleep(0.5 * (attempt + 1))
                continue
            raise
    raise FlowError(last)


# -- UDP packet rate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UdpRateResult:
    size: int
    sent: int
    received: int
    seconds: float
    receiver_pps: float

    @property
    def loss_pct(self) -> float:
        return 100.0 * (self.sent - self.received) / self.sent if self.sent else 100.0

    @property
    def receiver_gbit_s(self) -> float:
        return self.receiver_pps * self.size * 8 / 1e9


def udp_rate(client: Place, server: Place, server_ip: str, *, size: int, duration: float,
             port: int = UDPGEN_PORT, run_id: int = 1) -> UdpRateResult:
    recv = server.popen(
        module_argv("enclave.bench.udpgen", "recv", "--port", str(port), "--run-id",
                    str(run_id), "--wait", str(duration + 15)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        read_json_line(recv, 15)  # {"ready": true}
        res = client.run(
            module_argv("enclave.bench.udpgen", "send", "--to", f"{server_ip}:{port}",
                        "--size", str(size), "--duration", str(duration), "--run-id",
                        str(run_id)),
            timeout=duration + 30,
        )
        sent = _json_out(res, "udpgen send")
        got = read_json_line(recv, 20)
    finally:
        stop(recv)
    if "error" in got:
        raise FlowError(f"udpgen recv: {got['error']}")
    return UdpRateResult(size=size, sent=int(sent["sent"]), received=int(got["received"]),
                         seconds=float(got["seconds"]), receiver_pps=float(got["pps"]))


def _json_out(res: subprocess.CompletedProcess[Any], what: str) -> dict[str, Any]:
    for line in reversed(str(res.stdout).splitlines()):
        if line.startswith("{"):
            data: dict[str, Any] = json.loads(line)
            if "error" in data:
                raise FlowError(f"{what}: {data['error']}")
            return data
    raise FlowError(f"{what} failed ({res.returncode}): {str(res.stderr).strip()[-400:]}")


# -- latency -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyResult:
    sent: int
    received: int
    p50_us: float | None
    p99_us: float | None


def start_echo_server(place: Place, port: int = ECHO_PORT) -> subprocess.Popen[Any]:
    proc = place.popen(module_argv("enclave.bench.udpgen", "echo", "--port", str(port)),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    read_json_line(proc, 15)
    return proc


def latency(client: Place, server_ip: str, *, count: int, interval: float = 0.005,
            timeout: float = 1.0, port: int = ECHO_PORT) -> LatencyResult:
    res = client.run(
        module_argv("enclave.bench.udpgen", "ping", "--to", f"{server_ip}:{port}",
                    "--count", str(count), "--interval", str(interval), "--timeout",
                    str(timeout)),
        timeout=count * (interval + timeout) + 30,
    )
    data = _json_out(res, "udpgen ping")
    return LatencyResult(sent=int(data["sent"]), received=int(data["received"]),
                         p50_us=data["p50_us"], p99_us=data["p99_us"])
