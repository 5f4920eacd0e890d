"""Suite-wide options. Area-specific fixtures live in conftest.py files beside their tests."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--hardware", action="store_true", help="run tests that need a real device attached"
    )
    parser.addoption("--ble-address", default=None, help="BLE address for hardware tests")
    parser.addoption("--serial-port", default=None, help="serial port for hardware tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--hardware"):
        return
    skip = pytest.mark.skip(reason="needs real hardware: run with --hardware")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)
