"""The benchmark smoke tier: every test under bench/ carries the ``bench`` marker
(``pytest -m bench``; ``-m "not bench"`` leaves it out)."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(BENCH):
            item.add_marker(pytest.mark.bench)
