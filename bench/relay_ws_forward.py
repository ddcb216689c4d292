"""How fast the platform's relay over TLS forwards: messages/s, Gbit/s and relay CPU per GB.

    python3 bench/relay_ws_forward.py [--seconds 5] [--batch 65536] [--relay-ws FILE]

    child process: aiohttp over TLS (throwaway self-signed key) serving only RELAY_WS_PATH with
                   enclave.platform.relay_ws (or the relay_ws.py at FILE, e.g. an older copy
                   from `git show REV:enclave/platform/relay_ws.py`)
    this process:  X and Y (enclave.wslink clients, as the agents' relay_tls uses them: zero
                   mask, one write per message) register with minted tickets; X sends DATA
                   messages of --batch bytes (a relay batch of 1,400-byte frames) whenever its
                   write buffer is below the high-water mark, Y counts what arrives

The relay's CPU is the child's utime + stime over the run (/proc/PID/stat).  Loopback on a
shared machine: the figures move with its load; compare two runs made one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support

from aiohttp import web

from enclave.platform.relay import mint_ticket, verify_ticket
from enclave.proto.relay_batch import MAX_MESSAGE, RELAY_WS_PATH, pack_batch
from enclave.proto.wire import (
    MSG_RELAY_DATA,
    MSG_RELAY_REGISTER,
    MSG_RELAY_REGISTERED,
    pack_relay_header,
)
from enclave.wslink import WsLink, open_client
from tests.support.tls import self_signed_pem, unverified_client_context

KEY = bytes(range(32))
LO = "127.0.0.1"


def _relay_ws(path: str | None) -> ModuleType:
    if path is None:
        from enclave.platform import relay_ws
        return relay_ws
    spec = importlib.util.spec_from_file_location("relay_ws_under_test", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def serve(port: int, cert: str, key: str, module: str | None) -> None:
    """The child: the relay WebSocket on LO:port until killed."""
    rw = _relay_ws(module)
    relay = rw.RelayWs(lambda raw, now: verify_ticket(KEY, raw, now))

    async def handler(request: web.Request) -> web.StreamResponse:
        return await rw.serve_ws(relay, request)

    app = web.Application()
    app.router.add_get(RELAY_WS_PATH, handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    web.run_app(app, host=LO, port=port, ssl_context=ctx, print=None, access_log=None)


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Counter:
    def __init__(self) -> None:
        self.msgs = self.bytes = 0
        self.last: bytes = b""

    def __call__(self, op: int, payload: memoryview | bytes) -> None:
        self.msgs += 1
        self.bytes += len(payload) - 8
        if payload[0] == MSG_RELAY_REGISTERED:
            self.last = bytes(payload)


async def _connect(port: int, ctx: ssl.SSLContext, sink: _Counter) -> WsLink:
    for _ in range(100):
        link = WsLink(sink, client=True, max_message=MAX_MESSAGE)
        try:
            return await open_client(LO, port, netloc=f"{LO}:{port}", path=RELAY_WS_PATH,
                                     ssl_ctx=ctx, link=link, check=lambda t: None, timeout=5)
        except OSError:
            await asyncio.sleep(0.1)
    raise SystemExit("relay did not come up")


async def _register(link: WsLink, sink: _Counter, channel: int, ticket: bytes) -> None:
    link.send(pack_relay_header(MSG_RELAY_REGISTER, channel), ticket)
    for _ in range(1000):
        if sink.last:
            sink.msgs = sink.bytes = 0
            return
        await asyncio.sleep(0.01)
    raise SystemExit("no REGISTERED")


async def run(port: int, seconds: float, batch: int, pid: int) -> dict[str, float]:
    ctx = unverified_client_context()
    frames = [os.urandom(1400)] * max(1, batch // 1402)
    head, body = pack_relay_header(MSG_RELAY_DATA, 7), pack_batch(frames)
    exp = int(time.time()) + 600
    sx, sy = _Counter(), _Counter()
    x = await _connect(port, ctx, sx)
    y = await _connect(port, ctx, sy)
    await _register(x, sx, 7, mint_ticket(KEY, "XXXXX", "YYYYY", exp))
    await _register(y, sy, 3, mint_ticket(KEY, "YYYYY", "XXXXX", exp))
    wake = asyncio.Event()
    x.on_writable = wake.set
    cpu0, t0 = _cpu(pid), time.monotonic()
    sent = 0
    while time.monotonic() - t0 < seconds:
        if x.paused:
            wake.clear()
            await wake.wait()
            continue
        x.send(head, body)
        sent += 1
        await asyncio.sleep(0)
    while sy.msgs < sent and time.monotonic() - t0 < seconds + 5:
        await asyncio.sleep(0.01)
    wall, cpu = time.monotonic() - t0, _cpu(pid) - cpu0
    x.close()
    y.close()
    gb = sy.bytes / 1e9
    return {"messages": sy.msgs, "sent": sent, "seconds": round(wall, 2),
            "msgs_per_s": round(sy.msgs / wall), "gbit_s": round(8 * gb / wall, 3),
            "relay_cpu_s": round(cpu, 2), "relay_cpu_s_per_gb": round(cpu / gb, 2) if gb else 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=65536, help="bytes of frames per message")
    ap.add_argument("--relay-ws", help="a relay_ws.py to load instead of the installed one")
    ap.add_argument("--serve", nargs=4, metavar=("PORT", "CERT", "KEY", "MODULE"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        port, cert, key, module = args.serve
        serve(int(port), cert, key, None if module == "-" else module)
        return
    import socket
    with socket.socket() as s:
        s.bind((LO, 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = self_signed_pem(Path(tmp), "relay-bench")
        import subprocess
        child = subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(cert),
                                  str(key), args.relay_ws or "-"])
        try:
            out = asyncio.run(run(port, args.seconds, args.batch, child.pid))
        finally:
            child.terminate()
            child.wait(10)
    print(" ".join(f"{k}={v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
