"""Fixtures for the connection tests (the netlab ones need root, iproute2 and nft)."""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture(scope="session")
def netlab_required() -> None:
    if os.geteuid() != 0:
        pytest.skip("netlab tests need root (network namespaces)")
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            pytest.skip(f"netlab tests need {tool!r} (iproute2 / nftables)")
