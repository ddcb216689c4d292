"""The running agent's local API: a root-only Unix socket for `enclave status|peers`.

    /run/enclave/            0700 (or $ENCLAVE_RUN_DIR)
      <sha256(state dir)[:16]>.sock   0600, one per agent (state directory)

One request per connection: a JSON line {"cmd": "status" | "peers"}; one JSON line back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from enclave.agent.errors import AgentError

RUN_DIR_ENV = "ENCLAVE_RUN_DIR"
DEFAULT_RUN_DIR = "/run/enclave"
MAX_REQUEST = 4096
CLIENT_TIMEOUT = 5.0

Commands = dict[str, Callable[[], Any]]


class AgentNotRunning(AgentError):
    pass


def socket_path(state_root: Path) -> Path:
    run_dir = Path(os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR)
    digest = hashlib.sha256(str(state_root.resolve()).encode()).hexdigest()[:16]
    return run_dir / f"{digest}.sock"


class LocalApi:
    def __init__(self, path: Path, commands: Commands) -> None:
        self.path = path
        self.commands = commands
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
                func = self.commands[req["cmd"]]
                reply: Any = {"ok": True, "result": func()}
            except (ValueError, KeyError, TypeError):
                reply = {"ok": False, "error": "bad request"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), CLIENT_TIMEOUT)
        except (OSError, TimeoutError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()


def _alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


def call(state_root: Path, cmd: str, timeout: float = CLIENT_TIMEOUT) -> Any:
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
        s.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
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
