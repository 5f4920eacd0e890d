"""`CalibrationSession`'s waits on the simulated rig in virtual time: each returns once its
condition holds and raises a DeviceError naming the device and the cause once its time is up."""

from __future__ import annotations

from pathlib import Path

import pytest

from nmcore.calibration.acquire import CalibrationSession
from nmcore.config import load_station
from nmcore.config.models import StationConfig
from nmcore.errors import DeviceError

BUILTIN = Path(__file__).resolve().parents[2] / "src/nmcore/configs_builtin/sim-rig.toml"


def _station(faults: dict[str, float] | None = None) -> StationConfig:
    station = load_station(BUILTIN)
    if faults is None:
        return station
    raw = station.model_dump(mode="python")
    for dev in raw["devices"]:
        if dev["id"] == "platform":
            dev["options"]["faults"] = faults
    return StationConfig.model_validate(raw)


async def test_the_waits_return_once_their_condition_holds(tmp_path: Path) -> None:
    async with CalibrationSession(
        _station(), ["platform"], realtime=False, state_dir=tmp_path
    ) as s:
        with pytest.raises(DeviceError, match=r"clock model did not settle within 0 s"):
            await s.wait_clock_settled("platform", timeout_s=0.0)
        await s.wait_clock_settled("platform")
        assert s.daemon.pipeline.clocks["platform"].settled
        await s.wait_device("platform")
        assert s.device_state("platform") == "streaming"
        await s.wait_streaming(["platform.imu"], min_s=0.5)
        st = s.stream("platform.imu")
        assert st.ring.head >= 0.5 * st.desc.rate_hz


async def test_a_device_that_drops_out_fails_the_waits_by_name(tmp_path: Path) -> None:
    # link up 0.2 s, then down for a minute: never the 1 s of data asked for
    station = _station({"disconnect_after_s": 0.2, "disconnect_duration_s": 60.0})
    async with CalibrationSession(
        station, ["platform"], realtime=False, state_dir=tmp_path, connect_timeout_s=1.0
    ) as s:
        with pytest.raises(DeviceError, match=r"no data from platform within 1 s \(platform: "):
            await s.wait_streaming(["platform.imu"], min_s=1.0)
        assert s.device_state("platform") != "streaming"
        with pytest.raises(DeviceError, match=r"platform not streaming within 1 s"):
            await s.wait_device("platform")
