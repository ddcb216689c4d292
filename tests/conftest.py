"""Tiers as pytest markers, applied by directory (``pytest -m unit`` / ``inmem`` / ``netlab``).

    tests/unit/<feature>/     unit     pure: no root, no network, no other processes to speak of
    tests/inmem/<feature>/    inmem    in-memory peers on a simulated clock
    tests/netlab/<feature>/   netlab   real namespaces, TAPs, sockets, agent and platform processes
    bench/                    bench    the benchmark smoke tier (marked by bench/conftest.py)

Shared helpers live in tests/support/ (no test imports another test or another folder's
conftest).  The ``root`` marker stays on the tests that need root inside the netlab tier.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.store import postgres_cluster  # noqa: F401  (one PostgreSQL per session)

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "inmem", "netlab")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            rel = item.path.resolve().relative_to(TESTS)
        except ValueError:
            continue  # not under tests/ (bench/ marks its own)
        if rel.parts and rel.parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, rel.parts[0]))
