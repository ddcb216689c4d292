"""Fixtures for netlab-tier tests (real network namespaces; root).

    def test_x(lab_factory):
        lab = lab_factory(Topology(sites=[Site("a", nat=NatType.SYMMETRIC)], public_hosts=["p"]))
        ...                                   # torn down after the test, pass or fail

``netlab_required`` skips with a clear reason when the lab cannot run here (not root, no iproute2
or nft, no network namespaces: tests.support.lab.netlab_unavailable).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from enclave.netlab import Lab, Topology
from tests.support.lab import LabFactory, netlab_unavailable


@pytest.fixture(scope="session")
def netlab_required() -> None:
    reason = netlab_unavailable()
    if reason is not None:
        pytest.skip(reason)


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
