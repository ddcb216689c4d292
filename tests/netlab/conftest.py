"""Fixtures for netlab-tier tests (real network namespaces; root).

    def test_x(lab_factory):
        lab = lab_factory(Topology(sites=[Site("a", nat=NatType.SYMMETRIC)], public_hosts=["p"]))
        ...                                   # torn down after the test, pass or fail

``netlab_required`` skips with a clear reason when the lab cannot run here (not root, no iproute2
or nft, no network namespaces).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from enclave.netlab import Lab, Topology


def _netlab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "netlab tests need root (network namespaces)"
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            return f"netlab tests need {tool!r} (iproute2 / nftables)"
    probe = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False
    )
    if probe.returncode != 0:
        return f"`ip netns` unavailable: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="session")
def netlab_required() -> None:
    reason = _netlab_unavailable()
    if reason is not None:
        pytest.skip(reason)


LabFactory = Callable[..., Lab]


@pytest.fixture
def lab_factory(netlab_required: None) -> Iterator[LabFactory]:
    """Build started labs; every one is torn down when the test ends (also on failure)."""
    labs: list[Lab] = []

    def make(topology: Topology, **kwargs: Any) -> Lab:
        lab = Lab(topology, **kwargs)
        labs.append(lab)
        return lab.start()

    try:
        yield make
    finally:
        for lab in reversed(labs):
            lab.close()
