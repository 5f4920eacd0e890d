"""Calibration bench, EMG and IMUs: contraction levels, gains, dead and saturated channels;
IMU biases as truth, mount rotation, rotations about an axis, a moving sensor."""

from __future__ import annotations

import asyncio
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nmcore.errors import ConfigError
from nmcore.hostclock import VirtualClock
from nmcore.sim.base import SimDriverBase
from nmcore.sim.bench import Bench, rpy_matrix
from nmcore.sim.run import run_station, stream_record
from nmcore.sim.scenario import G_MPS2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "emulators"))
import bench_harness as harness
from bench_harness import run_script, sample_times

from nmcore_drivers.sim import SimEmgDriver, SimImuDriver, SimPlatformDriver

T0_S = 40.0
make_ctx = partial(harness.make_ctx, T0_S)
IDEAL = {"kind": "ideal"}


def rms(x: Any) -> Any:
    return np.sqrt(np.mean(np.asarray(x) ** 2, axis=0))


# -- EMG ----------------------------------------------------------------------------------------
async def test_contraction_level_scales_the_rms() -> None:
    ctx, clock, truth = make_ctx()
    bench = Bench.install(ctx.shared, clock)
    mvc = [400.0, 250.0, 150.0]
    drv = SimEmgDriver("emg", {"transport": IDEAL, "n_channels": 3, "mvc_rms_uv": mvc}, ctx)
    script = [
        (T0_S + 1.5, lambda: bench.contract("emg", 0.25)),
        (T0_S + 3.5, lambda: bench.contract("emg", 1.0)),
        (T0_S + 5.5, lambda: bench.contract("emg", 0.5, channels=[1])),
        (T0_S + 5.5, lambda: bench.contract("emg", 0.0, channels=[0, 2])),
    ]
    run = await run_script([drv], clock, T0_S + 7.5, script)
    rec = stream_record(run.blocks["emg.emg"], 16)
    t = sample_times(truth, "emg", "emg.emg", rec.index)

    def seg(a: float, b: float) -> Any:
        return rms(rec.data[(t >= T0_S + a) & (t < T0_S + b)])

    rest, quarter, full, mixed = seg(0.2, 2.0), seg(2.1, 4.0), seg(4.1, 6.0), seg(6.1, 7.5)
    noise = 5.0
    np.testing.assert_allclose(rest, noise, rtol=0.08)
    for level, got in ((0.25, quarter), (1.0, full)):
        want = np.sqrt(noise**2 + (level * np.asarray(mvc)) ** 2)
        np.testing.assert_allclose(got, want, rtol=0.06)
    np.testing.assert_allclose(mixed, [noise, np.hypot(noise, 125.0), noise], rtol=0.08)
    acts = [a for a in bench.truth()["actions"] if a["action"] == "contract"]
    assert [a["t_s"] for a in acts] == pytest.approx(
        [T0_S + 2.0, T0_S + 4.0, T0_S + 6.0, T0_S + 6.0]
    )


async def test_gain_dead_and_saturated_channels() -> None:
    ref_ctx, ref_clock, _ = make_ctx()
    ctx, clock, _truth = make_ctx()
    base = {"transport": IDEAL, "n_channels": 4, "mvc_rms_uv": 3000.0, "mains_uv": 20.0}
    ref = SimEmgDriver("emg", base, ref_ctx)
    opts = {
        **base,
        "gain": [2.0, 0.5, 1.0, 1.0],
        "dead_channels": [3],
        "saturate_channels": [2],
        "full_scale_uv": 2500.0,
    }
    drv = SimEmgDriver("emg", opts, ctx)
    ref_bench = Bench.install(ref_ctx.shared, ref_clock)
    bench = Bench.install(ctx.shared, clock)
    ref_run, run = await asyncio.gather(
        run_script(
            [ref], ref_clock, T0_S + 3.0, [(T0_S + 1.0, lambda: ref_bench.contract("emg", 1.0))]
        ),
        run_script([drv], clock, T0_S + 3.0, [(T0_S + 1.0, lambda: bench.contract("emg", 1.0))]),
    )
    want = stream_record(ref_run.blocks["emg.emg"], 16).data
    got = stream_record(run.blocks["emg.emg"], 16).data
    n = min(want.shape[0], got.shape[0])
    want, got = want[:n], got[:n]
    # gain exactly as configured (below the rails), clipped at the rails above them
    np.testing.assert_allclose(got[:, 0], np.clip(2.0 * want[:, 0], -2500.0, 2500.0), rtol=1e-15)
    np.testing.assert_allclose(got[:, 1], np.clip(0.5 * want[:, 1], -2500.0, 2500.0), rtol=1e-15)
    rest = slice(0, 1500)  # before the contraction: far from the rails, the gain alone
    np.testing.assert_array_equal(got[rest, 0], 2.0 * want[rest, 0])
    np.testing.assert_array_equal(got[rest, 1], 0.5 * want[rest, 1])
    assert np.max(np.abs(got[:, 0])) == 2500.0  # a 3 mV MVC at gain 2 hits the rails
    # the electrode offset pins it to the rail at rest; a 3 mV contraction on top of it
    # pulls it off the rail only at the troughs
    np.testing.assert_array_equal(got[rest, 2], 2500.0)
    assert np.mean(got[:, 2] == 2500.0) > 0.8
    np.testing.assert_array_equal(got[:, 3], 0.0)  # flat line
    errs = drv.truth_errors()
    assert errs["gain"] == [2.0, 0.5, 1.0, 1.0]
    assert errs["dead_channels"] == [3]
    assert errs["saturate_channels"] == [2]
    assert errs["full_scale_uv"] == 2500.0
    assert bench.truth()["devices"]["emg"] == errs


def test_emg_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="full_scale_uv"):
        SimEmgDriver.describe("emg", {"saturate_channels": [0]})
    with pytest.raises(ConfigError, match="dead_channels"):
        SimEmgDriver.describe("emg", {"n_channels": 2, "dead_channels": [2]})
    with pytest.raises(ConfigError, match="gain has 3 values"):
        SimEmgDriver.describe("emg", {"n_channels": 2, "gain": [1, 1, 1]})
    bench = Bench({}, VirtualClock(0.0))
    with pytest.raises(ValueError, match="level"):
        bench.contract("emg", 1.5)


# -- IMU ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["imu", "platform"])
async def test_bias_truth_is_what_a_still_sensor_averages_to(kind: str) -> None:
    ctx, clock, _truth = make_ctx()
    Bench.install(ctx.shared, clock)
    opts = {"transport": IDEAL, "acc_bias_mps2": 0.3, "gyro_bias_dps": 2.0}
    drv: SimDriverBase = (
        SimImuDriver("dev", opts, ctx) if kind == "imu" else SimPlatformDriver("dev", opts, ctx)
    )
    run = await run_station([drv], clock, T0_S + 4.0)
    rec = stream_record(run.blocks["dev.imu"], 16)
    errs = drv.truth_errors()
    mean = rec.data.mean(axis=0)
    n = rec.data.shape[0]
    acc_sd = (0.03 if kind == "imu" else 0.02) * 5.0 / np.sqrt(n)
    gyro_sd = (0.15 if kind == "imu" else 0.1) * 5.0 / np.sqrt(n)
    np.testing.assert_allclose(mean[:3] - [0.0, 0.0, G_MPS2], errs["acc_bias_mps2"], atol=acc_sd)
    np.testing.assert_allclose(mean[3:], errs["gyro_bias_dps"], atol=gyro_sd)
    assert np.max(np.abs(errs["gyro_bias_dps"])) > 0.2  # drawn, not zero


@pytest.mark.parametrize("rpy", [(90.0, 0.0, 0.0), (10.0, -25.0, 40.0)])
async def test_mount_rotation_rotates_gravity_and_the_rotation_axis(rpy: tuple[float, ...]) -> None:
    ctx, clock, truth = make_ctx()
    bench = Bench.install(ctx.shared, clock)
    opts = {
        "transport": IDEAL,
        "mount_rotation_deg": list(rpy),
        "acc_noise_rms_mps2": 0.0,
        "gyro_noise_rms_dps": 0.0,
    }
    drv = SimImuDriver("imu", opts, ctx)
    axis = np.array([0.0, 0.6, 0.8])
    script = [(T0_S + 1.0, lambda: bench.rotate_imu("imu", axis, 45.0, 2.0))]
    run = await run_script([drv], clock, T0_S + 4.5, script)
    rec = stream_record(run.blocks["imu.imu"], 16)
    t = sample_times(truth, "imu", "imu.imu", rec.index)
    errs = drv.truth_errors()
    m = rpy_matrix(*rpy)
    np.testing.assert_allclose(errs["mount_rotation_matrix"], m, atol=1e-15)
    data = rec.data - np.concatenate([errs["acc_bias_mps2"], errs["gyro_bias_dps"]])
    act = next(a for a in bench.truth()["actions"] if a["action"] == "rotate_imu")
    t0, t1 = act["t_s"], act["t_s"] + 2.0
    before, turning, after = t < t0, (t >= t0) & (t < t1), t >= t1
    # still and level: gravity seen through the mount
    np.testing.assert_allclose(
        data[before, :3], np.broadcast_to(m.T @ [0, 0, G_MPS2], (before.sum(), 3)), atol=1e-12
    )
    # turning: the gyro reads the rate along the frame axis, in sensor axes
    np.testing.assert_allclose(
        data[turning, 3:], np.broadcast_to(45.0 * m.T @ axis, (turning.sum(), 3)), atol=1e-12
    )
    angle_deg = np.sum(data[turning, 3:] @ m.T @ axis) / 1000.0
    assert angle_deg == pytest.approx(90.0, abs=0.1)
    # after: still again, gravity through the frame's new orientation and the mount
    r_after = np.asarray(act["orientation_after"])
    np.testing.assert_allclose(data[after, 3:], 0.0, atol=1e-12)
    want = m.T @ r_after.T @ [0, 0, G_MPS2]
    np.testing.assert_allclose(data[after, :3], np.broadcast_to(want, (after.sum(), 3)), atol=1e-9)
    c, s = np.cos(np.pi / 2), np.sin(np.pi / 2)  # 90 deg about (0, .6, .8): Rodrigues by hand
    k = axis
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    np.testing.assert_allclose(
        r_after, np.eye(3) * c + s * kx + (1 - c) * np.outer(k, k), atol=1e-12
    )


async def test_moving_imu_is_not_still_and_still_again_after_hold() -> None:
    ctx, clock, truth = make_ctx()
    bench = Bench.install(ctx.shared, clock)
    drv = SimPlatformDriver("pf", {"transport": IDEAL}, ctx)
    script = [
        (T0_S + 1.0, lambda: bench.move_imu("pf", 20.0)),
        (T0_S + 4.0, lambda: bench.hold_still("pf")),
    ]
    run = await run_script([drv], clock, T0_S + 6.0, script)
    rec = stream_record(run.blocks["pf.imu"], 16)
    t = sample_times(truth, "pf", "pf.imu", rec.index)
    still = rec.data[t < T0_S + 1.4]
    moving = rec.data[(t >= T0_S + 1.6) & (t < T0_S + 4.4)]
    held = rec.data[t >= T0_S + 4.6]
    assert np.all(np.std(still[:, 3:], axis=0) < 0.15)
    assert np.all(np.std(moving[:, 3:], axis=0) > 8.0)
    assert np.all(np.std(held[:, 3:], axis=0) < 0.15)
    assert np.std(np.linalg.norm(moving[:, :3], axis=1)) > 0.05  # the hand accelerates it
    # held still at the orientation the hand left it in (gravity keeps its length)
    assert np.linalg.norm(held[:, :3].mean(axis=0)) == pytest.approx(G_MPS2, abs=0.1)


async def test_no_bench_no_change_with_zero_mount_rotation() -> None:
    """Default options give the same IMU samples as an explicit zero mount rotation (and the
    mount rotation does change them)."""
    out = []
    for extra in ({}, {"mount_rotation_deg": [0.0, 0.0, 0.0]}, {"mount_rotation_deg": [0, 5, 0]}):
        ctx, clock, _ = make_ctx()
        drv = SimImuDriver("imu", {"transport": IDEAL, **extra}, ctx)
        run = await run_station([drv], clock, T0_S + 1.0)
        out.append(stream_record(run.blocks["imu.imu"], 16).data)
    np.testing.assert_array_equal(out[0], out[1])
    assert not np.allclose(out[0][:, 0], out[2][:, 0], atol=0.5)
