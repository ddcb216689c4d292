"""ControlClient's failover over several platform URLs, with real sockets on loopback: a URL where
nobody answers (connection refused: the node is gone) is skipped while another URL is not marked
down, so the agent does not spend every other attempt on a dead node (before: it alternated)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from enclave.agent.control import ControlClient
from enclave.cert.keys import generate_private_key
from tests.support.control_client import Recorder, until
from tests.support.proc import free_port


def test_a_refusing_url_is_skipped_while_another_answers(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    dead = free_port()  # nobody listens there: connection refused
    accepted = 0

    async def scenario() -> None:
        nonlocal accepted

        async def hang_up(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1  # there, but no platform: the TLS handshake fails
            w.close()

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        live = server.sockets[0].getsockname()[1]
        client = ControlClient([f"https://127.0.0.1:{dead}", f"https://127.0.0.1:{live}"],
                               "00" * 32, "ABCDE", generate_private_key(), Recorder())
        task = asyncio.create_task(client.run())
        try:
            await until(lambda: accepted >= 4, timeout=30, what="four attempts at the live URL")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            server.close()
            await server.wait_closed()

    with caplog.at_level(logging.INFO, logger="enclave.agent.control"):
        asyncio.run(scenario())
    at_dead = [r for r in caplog.records if f":{dead}" in r.getMessage()]
    assert len(at_dead) == 1, [r.getMessage() for r in at_dead]  # the first attempt only
    assert "Connect" in at_dead[0].getMessage()
