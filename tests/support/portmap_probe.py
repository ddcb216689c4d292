"""The agent's port-mapping client on its own, run inside a lab host (its sockets and miniupnpc's
threads must live in the host's namespace, so it is a process of its own):

    python -m tests.support.portmap_probe PORT METHOD[,METHOD...]
        stdout: one JSON line, the mapping (PortMapping.to_json()) or {"error": ...}
        then reads stdin: "renew" asks again (the renewal; one more JSON line), anything else
        (or EOF) releases the mapping and prints "released"

    p = host.popen(probe_argv(4500, "pcp"), env=ENV, cwd=REPO, stdin=PIPE, stdout=PIPE,
                   text=True)
"""

from __future__ import annotations

import asyncio
import json
import sys

from enclave.agent.portmap import Method, PortMapper


def probe_argv(port: int, *methods: str) -> list[str]:
    return [sys.executable, "-m", "tests.support.portmap_probe", str(port), ",".join(methods)]


async def _main(port: int, methods: list[Method]) -> None:
    pm = PortMapper(port, lambda: None, methods=methods)
    while True:
        pm.mapping = await pm.request()  # with a mapping held: its renewal
        print(json.dumps(pm.mapping.to_json() if pm.mapping else {"error": pm.last_error}),
              flush=True)
        if (await asyncio.to_thread(sys.stdin.readline)).strip() != "renew":
            break
    await pm.release()
    print("released", flush=True)


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]), [Method(m) for m in sys.argv[2].split(",")]))
