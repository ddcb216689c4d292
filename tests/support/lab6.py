"""An IPv6 (or dual-stack) platform lab: a platform serving on [::] on public host "plat", its
URL an IPv6 literal, an IPv4 one or both, and enrolled `enclave up` agents (tests.support.lab).

    with v6_platform_lab(topo, tmp, ["a1", "b1"], urls=("v6",)) as (lab, plat, agents): ...

``urls``: the platform's URLs in order, "v4" (https://198.18.0.11:8443) and/or "v6"
(https://[2001:db8::11]:8443); the first is the one `platform init` gets, the rest are added
with `enclave platform urls add` before the enrolment token is made, so agents hold them all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from enclave.netlab import Lab, Topology
from tests.support.lab import API_PORT, Agent, parallel, runner, spawner
from tests.support.platform import Platform


def endpoint_host(endpoint: str) -> str:
    """The host of an `enclave peers` endpoint: "198.18.1.1:5" or "[2001:db8::1]:5"."""
    host = endpoint.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") else host


def url_host(lab: Lab, family: str, plat_host: str = "plat") -> str:
    """The platform host's address as a URL host: "198.18.0.11" or "[2001:db8::11]"."""
    host = lab.public_host(plat_host)
    if family == "v6":
        assert host.ip6 is not None, "the lab has no IPv6 internet"
        return f"[{host.ip6}]"
    return str(host.ip)


@contextmanager
def v6_platform_lab(topo: Topology, tmp: Path, hosts: Sequence[str], *,
                    urls: Sequence[str] = ("v6",), plat_host: str = "plat",
                    plat_env: dict[str, str] | None = None
                    ) -> Iterator[tuple[Lab, Platform, dict[str, Agent]]]:
    lab = Lab(topo).start()
    agents: dict[str, Agent] = {}
    plat: Platform | None = None
    try:
        ph = lab.public_host(plat_host)
        plat = Platform.init(tmp, url_host(lab, urls[0], plat_host), API_PORT, runner(ph),
                             spawner(ph), listen_host="[::]")
        for extra in urls[1:]:
            res = plat.cli("urls", "add", f"https://{url_host(lab, extra, plat_host)}:{API_PORT}")
            assert res.returncode == 0, res.stderr
        plat.extra_env.update(plat_env or {})
        plat.start()
        token = plat.token()
        for name in hosts:
            agents[name] = Agent(lab.host(name), tmp / name, tmp / f"{name}.log")
        parallel(lambda a: a.enrol(token), agents.values())
        yield lab, plat, agents
    finally:
        parallel(lambda a: a.down(), agents.values(), workers=16)
        if plat is not None:
            plat.stop()
        lab.close()
