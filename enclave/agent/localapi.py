"""The running agent's local API: a root-only Unix socket for `enclave status|peers`.

    /run/enclave/            0700 (or $ENCLAVE_RUN_DIR)
      <sha256(state dir)[:16]>.sock   0600, one per agent (state directory)

One request per connection: a JSON line {"cmd": "status" | "peers"} or, for the commands that
take arguments and run a while, {"cmd": "ping", "args": {...}}; one JSON line back:
{"ok": true, "result": ...} or {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from enclave.agent.errors import AgentError

RUN_DIR_ENV = "ENCLAVE_RUN_DIR"
DEFAULT_RUN_DIR = "/run/enclave"
MAX_REQUEST = 4096
CLIENT_TIMEOUT = 5.0

Commands = dict[str, Callable[[], Any]]
Calls = dict[str, Callable[[dict[str, Any]], Awaitable[Any]]]  # with arguments, asynchronous
CALL_TIMEOUT = 60.0  # the longest an asynchronous call may run


class LocalApiError(AgentError):
    """A call's refusal that the client shows as it is (e.g. "BBBBB is not a peer")."""


class AgentNotRunning(AgentError):
    pass


def socket_path(state_root: Path) -> Path:
    run_dir = Path(os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR)
    digest = hashlib.sha256(str(state_root.resolve()).encode()).hexdigest()[:16]
    return run_dir / f"{digest}.sock"


class LocalApi:
    def __init__(self, path: Path, commands: Commands, calls: Calls | None = None) -> None:
        self.path = path
        self.commands = commands
        self.calls: Calls = dict(calls or {})
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        if self.path.exists():
            if _alive(self.path):
                raise AgentError(f"another agent already runs with this state ({self.path})")
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._client, str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
        self.path.unlink(missing_ok=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), CLIENT_TIMEOUT)
            try:
                req = json.loads(line[:MAX_REQUEST])
                reply: Any = {"ok": True, "result": await self._dispatch(req)}
            except LocalApiError as exc:
                reply = {"ok": False, "error": str(exc)}
            except (ValueError, KeyError, TypeError):
                reply = {"ok": False, "error": "bad request"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), CLIENT_TIMEOUT)
        except (OSError, TimeoutError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()


    async def _dispatch(self, req: Any) -> Any:
        cmd = req["cmd"]
        if cmd in self.commands:
            return self.commands[cmd]()
        args = req.get("args", {})
        if not isinstance(args, dict):
            raise TypeError("args must be an object")
        try:
            return await asyncio.wait_for(self.calls[cmd](args), CALL_TIMEOUT)
        except TimeoutError:
            raise LocalApiError(f"{cmd} took longer than {CALL_TIMEOUT:.0f}s") from None


def _alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


def call(state_root: Path, cmd: str, timeout: float = CLIENT_TIMEOUT,
         args: dict[str, Any] | None = None) -> Any:
    """Ask the agent running with this state directory; AgentNotRunning if there is none."""
    path = socket_path(state_root)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise AgentNotRunning(f"no agent is running for {state_root} "
                                  "(start it with `enclave up`)") from None
        except OSError as exc:
            raise AgentError(f"cannot reach the agent at {path}: {exc}") from None
        req: dict[str, Any] = {"cmd": cmd} if args is None else {"cmd": cmd, "args": args}
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    try:
        reply = json.loads(buf)
    except ValueError:
        raise AgentError("the agent sent a malformed reply") from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        error = reply.get("error") if isinstance(reply, dict) else reply
        raise AgentError(f"the agent refused: {error}")
    return reply["result"]
