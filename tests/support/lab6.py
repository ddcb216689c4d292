"""An IPv6 (or dual-stack) platform lab: a platform serving on [::] on public host "plat", its
URL an IPv6 literal, an IPv4 one or both, and enrolled `enclave up` agents (tests.support.lab).

    with v6_platform_lab(topo, tmp, ["a1", "b1"], urls=("v6",)) as (lab, plat, agents): ...

``urls``: the platform's URLs in order, "v4" (https://198.18.0.11:8443) and/or "v6"
(https://[2001:db8::11]:8443); the first is the one `platform init` gets, the rest are added
with `enclave platform urls add` before the enrolment token is made, so agents hold them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from enclave.netlab import Lab, Topology
from tests.support.lab import Agent, platform_lab_of
from tests.support.platform import Platform


def endpoint_host(endpoint: str) -> str:
    """The host of an `enclave peers` endpoint: "198.18.1.1:5" or "[2001:db8::1]:5"."""
    host = endpoint.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") else host


def v6_platform_lab(topo: Topology, tmp: Path, hosts: Sequence[str], *,
                    urls: Sequence[str] = ("v6",), plat_host: str = "plat",
                    plat_env: dict[str, str] | None = None
                    ) -> AbstractContextManager[tuple[Lab, Platform, dict[str, Agent]]]:
    """platform_lab_of with `enclave up` Agents, the platform listening on [::]."""
    return platform_lab_of(Agent, topo, tmp, hosts, plat_host=plat_host, plat_env=plat_env,
                           urls=urls, listen_host="[::]")
