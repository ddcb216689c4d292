"""The agent unit's CapabilityBoundingSet= is enough: two agents started as root with only those
capabilities (setpriv drops the rest, as systemd does, and sets no_new_privs) create their TAPs,
connect and carry traffic. systemd itself does not run here, so this is the part of the unit that
can be exercised for real."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from enclave.netlab import Lab, NatType, Site, Topology
from enclave.service.units import AGENT
from tests.support.lab import Agent, intents_both_ways, platform_lab_of
from tests.support.platform import Platform
from tests.support.proc import ENV, REPO, enclave
from tests.support.traffic import ping
from tests.support.wait import wait_for

pytestmark = [pytest.mark.netlab, pytest.mark.root]
CAP_BITS = {"CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}  # capability.h


def _setpriv_caps() -> str:
    """'-all,+net_admin,...' for setpriv --bounding-set, from the unit's capability list."""
    return ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in AGENT.capabilities)])


class BoundedAgent(Agent):
    """`enclave up` under `setpriv` with only the agent unit's bounding set."""

    def start(self, *extra: str, env: dict[str, str] | None = None) -> None:
        self.env = dict(env or {})
        with open(self.log_path, "ab") as log:
            argv = ["setpriv", "--bounding-set", _setpriv_caps(), "--inh-caps", "-all",
                    "--no-new-privs", "env", *(f"{k}={v}" for k, v in self.env.items()),
                    *enclave("--log-level", "debug", "up", "--state", str(self.state))]
            self.proc = self.host.popen(argv, env=ENV, cwd=REPO, stdout=log,
                                        stderr=subprocess.STDOUT)


def _effective_caps(state: Path) -> int:
    """CapEff of the `enclave up` process serving STATE (found by its command line)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            status = (proc / "status").read_text()
        except OSError:
            continue
        if b"up" in argv and str(state).encode() in argv and b"setpriv" not in argv[0]:
            line = next(ln for ln in status.splitlines() if ln.startswith("CapEff:"))
            return int(line.split()[1], 16)
    raise AssertionError(f"no `enclave up --state {state}` process")


@pytest.fixture
def world(netlab_required: None, tmp_path: Path
          ) -> Iterator[tuple[Lab, Platform, dict[str, BoundedAgent]]]:
    topo = Topology(sites=[Site("ca", nat=NatType.FULL_CONE), Site("cb", nat=NatType.FULL_CONE)],
                    public_hosts=["plat"])
    with platform_lab_of(BoundedAgent, topo, tmp_path, ("ca1", "cb1")) as w:
        yield w


def test_agents_run_with_only_the_units_capabilities(
        world: tuple[Lab, Platform, dict[str, BoundedAgent]]) -> None:
    _lab, _plat, agents = world
    a, b = agents["ca1"], agents["cb1"]
    a.start()
    b.start()
    a.wait_up()
    b.wait_up()
    want = sum(1 << CAP_BITS[c] for c in AGENT.capabilities)
    assert _effective_caps(a.state) == want  # the bound really applied (no CAP_SYS_ADMIN, ...)
    assert a.has_link() and b.has_link(), a.log()[-2000:] + b.log()[-2000:]
    intents_both_ways(a, b)
    wait_for(lambda: a.connected(b.name) and b.connected(a.name), timeout=20,
             what="connected with bounded capabilities")
    assert ping(a.host, b.overlay_ip, count=3) == 3, a.log()[-3000:]
