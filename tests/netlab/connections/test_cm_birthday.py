"""Birthday probing through real NATs: a port-restricted site and a symmetric site, no relay.

    refl (UDP reflector)          pr1 (port-restricted NAT)  <-- direct-udp -->  sy1 (symmetric)

The ordinary punch cannot connect this pair (the expected-paths matrix had it as R); with no
relay offered the only way the session comes up is the birthday run: the symmetric side's 256
sockets, the port-restricted side's random probes (tests.support.birthday.attempt).  The lab's
symmetric NAT must really hand out random ports, or a hit would prove nothing: checked first.
"""

from __future__ import annotations

import asyncio
import itertools
import socket

import pytest

from enclave.netlab import Lab
from enclave.netlab.netns import socket_in_netns
from tests.support.birthday import HARD_SITE, attempts, topology
from tests.support.cm_lab import REFLECT_UDP, Reflector
from tests.support.lab import LabFactory

pytestmark = [pytest.mark.netlab, pytest.mark.root]


async def _mapped_ports(lab: Lab, count: int) -> list[tuple[int, int]]:
    """(local port, public port) of `count` sockets of sy1, as the reflector saw them."""
    reflector = Reflector(lab.host("refl"))
    await reflector.start()
    loop = asyncio.get_running_loop()
    socks = [socket_in_netns(lab.host(f"{HARD_SITE}1").netns, socket.AF_INET, socket.SOCK_DGRAM)
             for _ in range(count)]
    try:
        out = []
        for s in socks:
            s.bind(("0.0.0.0", 0))
            s.setblocking(False)
            await loop.sock_sendto(s, b"reflect?", (str(lab.host("refl").ip), REFLECT_UDP))
            data = await asyncio.wait_for(loop.sock_recv(s, 200), 3)
            out.append((s.getsockname()[1], int(data.decode().rsplit(":", 1)[1])))
        return out
    finally:
        for s in socks:
            s.close()
        reflector.close()


def test_symmetric_lab_nat_picks_random_ports(lab_factory: LabFactory) -> None:
    lab = lab_factory(topology(1))
    pairs = asyncio.run(_mapped_ports(lab, 16))
    public = [p for _, p in pairs]
    assert len(set(public)) == 16
    assert all(local != pub for local, pub in pairs)  # not the source port kept
    steps = {b - a for a, b in itertools.pairwise(public)}
    assert len(steps) > 8  # not a sequence (fully-random, not +1 per flow)
    assert max(public) - min(public) > 8192  # spread over the range


def test_port_restricted_and_symmetric_connect_directly_without_relay(
        lab_factory: LabFactory) -> None:
    lab = lab_factory(topology(1))
    [res] = asyncio.run(attempts(lab, 1, 1))
    easy, hard = res.runs
    assert easy is not None and hard is not None, res
    assert easy["role"] == "easy" and hard["role"] == "hard", res
    assert res.paths == ("direct-udp", "direct-udp"), res
    assert res.data_ok, res
    assert easy["outcome"] == "direct", res
    assert 0 < easy["probes"] <= 2048 and easy["sockets"] == 0, res
    assert 0 < hard["sockets"] <= 256 and 1 <= hard["heard"] <= 4, res
    assert res.direct
