"""The agent's local API with calls that take arguments and run a while (`enclave ping`): a
real Unix socket in a temporary run directory, the real client (`localapi.call`)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from enclave.agent.errors import AgentError
from enclave.agent.localapi import RUN_DIR_ENV, LocalApi, LocalApiError, call, socket_path


async def _echo(args: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.01)
    if args.get("refuse"):
        raise LocalApiError("BBBBB is not a peer of this system")
    return {"got": args}


def _raw(path: Path, line: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(line)
        return dict(json.loads(s.makefile("rb").readline()))


def test_calls_with_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "run"))
    state = tmp_path / "state"
    state.mkdir()

    async def main() -> None:
        api = LocalApi(socket_path(state), {"status": lambda: {"name": "AAAAA"}}, {"ping": _echo})
        await api.start()
        try:
            def client() -> None:
                assert call(state, "status") == {"name": "AAAAA"}  # plain commands unchanged
                assert call(state, "ping", args={"peer": "BBBBB"}) == {"got": {"peer": "BBBBB"}}
                with pytest.raises(AgentError, match="BBBBB is not a peer of this system"):
                    call(state, "ping", args={"refuse": True})
                path = socket_path(state)
                for bad in (b'{"cmd": "ping", "args": [1]}\n', b'{"cmd": "nope"}\n',
                            b"not json\n", b'{"args": {}}\n'):
                    assert _raw(path, bad) == {"ok": False, "error": "bad request"}
            await asyncio.to_thread(client)
        finally:
            await api.stop()

    asyncio.run(main())
