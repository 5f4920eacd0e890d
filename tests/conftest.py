"""Suite-wide options and the fixtures several areas share. Area-specific fixtures live in
conftest.py files beside their tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"


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


@pytest.fixture(scope="session")
def fw_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference firmware's host build (`nm-fw-host`), made once per session with
    `make -C firmware` into a private directory (parallel runs and other builds of
    firmware/build must not race with this one)."""
    if not (shutil.which("make") and shutil.which(os.environ.get("CC", "gcc"))):
        pytest.skip("needs make and gcc to build the host firmware (apt install build-essential)")
    build = tmp_path_factory.mktemp("fw-host-build")
    subprocess.run(
        ["make", "-C", str(FIRMWARE), f"B={build}", f"{build}/nm-fw-host"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return build / "nm-fw-host"
