"""The unit tier: fast tests with no node, no network and no anvil (``pytest -m unit``).

Every test under ``tests/unit/`` gets the ``unit`` marker here, so ``-m unit`` selects exactly
this folder; the marker is registered here too (``--strict-markers`` knows it)."""

from __future__ import annotations

from pathlib import Path

import pytest

UNIT_DIR = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "unit: fast tests, no node, no network")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if UNIT_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.unit)
