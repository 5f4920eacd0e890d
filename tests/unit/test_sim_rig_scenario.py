"""Simulated rig: the shared scenario, the body model, its kernel and the driver options."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from nmcore.driver import Driver, DriverContext, load_driver
from nmcore.errors import ConfigError, DeviceError
from nmcore.hostclock import VirtualClock
from nmcore.model import StreamKind
from nmcore.sim._kernels import multisine_block
from nmcore.sim.scenario import (
    SCENARIO_KEY,
    BodyOptions,
    Scenario,
    ScenarioOptions,
    add_min_jerk_step,
    min_jerk,
)
from nmcore_drivers.sim import (
    SimEmgDriver,
    SimForcePlateDriver,
    SimImuDriver,
    SimPlatformDriver,
)


def test_trial_schedule_is_reproducible_and_independent_of_how_it_is_asked() -> None:
    opts = ScenarioOptions(seed=11, direction="random", trial_period_s=5.0, trial_jitter_s=0.5)
    a = Scenario(opts, 100.0)
    b = Scenario(opts, 100.0)
    in_one = a.trials_between(0.0, 500.0)
    pieces = [tr for k in range(400) for tr in b.trials_between(100.0 + k, 100.0 + k + 1.0)]
    unique = {tr.index: tr for tr in pieces}
    assert [unique[k] for k in sorted(unique)] == in_one[: len(unique)]
    times = np.array([tr.t_s for tr in in_one])
    nominal = 100.0 + 3.0 + 5.0 * np.arange(times.size)
    assert times.size == 80
    assert np.all(np.abs(times - nominal) <= 0.5)
    assert np.std(times - nominal) > 0.2  # jitter is really there
    assert {tr.direction for tr in in_one} == {"forward", "backward", "left", "right"}
    c = Scenario(opts.model_copy(update={"seed": 12}), 100.0)
    assert [tr.t_s for tr in c.trials_between(0.0, 400.0)] != list(times)


def test_trial_count_and_truth_records() -> None:
    sink: list[dict[str, Any]] = []
    sc = Scenario(ScenarioOptions(n_trials=4, trigger_to_motion_ms=25.0), 0.0)
    trials = sc.trials_between(0.0, 1000.0, sink.append)
    assert len(trials) == 4
    assert [r["trial"] for r in sink] == [0, 1, 2, 3]
    assert sink == list(sc.truth)
    for tr, rec in zip(trials, sink, strict=True):
        assert rec["motion_onset_t_s"] - rec["t_s"] == pytest.approx(0.025)
        assert rec["kind"] == "translation"
        assert rec["amplitude"] == 0.08
        assert tr.response_onset_t_s > tr.motion_onset_t_s


def test_overlapping_trials_are_rejected_with_a_fix() -> None:
    with pytest.raises(ValidationError, match="raise trial_period_s"):
        ScenarioOptions(trial_period_s=3.0, trial_jitter_s=1.0)


def test_multisine_kernel_matches_numpy_and_py_func() -> None:
    rng = np.random.default_rng(5)
    omega = rng.uniform(0.1, 20.0, (40, 2))
    amp = rng.uniform(0.0, 1e-3, (40, 2))
    phase = rng.uniform(0.0, 6.3, (40, 2))
    t0, dt, n = 12345.678, 1.0 / 1000.0 * (1 + 85e-6), 2000
    t = t0 + np.arange(n) * dt
    arg = t[:, None, None] * omega[None] + phase[None]
    ref = (
        np.sum(amp * np.sin(arg), axis=1),
        np.sum(amp * omega * np.cos(arg), axis=1),
        -np.sum(amp * omega**2 * np.sin(arg), axis=1),
    )
    for fn in (multisine_block, multisine_block.py_func):
        out = tuple(np.empty((n, 2)) for _ in range(3))
        fn(t0, dt, omega, amp, phase, *out)
        for got, want, scale in zip(out, ref, (1e-3, 2e-2, 0.4), strict=True):
            np.testing.assert_allclose(got, want, atol=1e-10 * scale)


def test_body_sway_matches_its_numpy_reference() -> None:
    sc = Scenario(ScenarioOptions(seed=2), 10.0)
    t = 10.0 + 33.3 + np.arange(500) / 1000.0
    for got, want in zip(sc.body.sway(t), sc.body.sway_reference(t), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_min_jerk_derivatives_are_consistent() -> None:
    tau = np.linspace(-0.2, 1.2, 14001)
    pos, vel, acc = min_jerk(tau)
    d = tau[1] - tau[0]
    np.testing.assert_allclose(np.gradient(pos, d)[1:-1], vel[1:-1], atol=2e-3)
    np.testing.assert_allclose(np.gradient(vel, d)[1:-1], acc[1:-1], atol=3e-2)
    assert pos[0] == 0.0
    assert pos[-1] == 1.0
    t = np.linspace(0.0, 1.0, 1001)
    out = [np.zeros((t.size, 2)) for _ in range(3)]
    add_min_jerk_step(t, 0.2, 0.5, np.array([2.0, -1.0]), *out)
    np.testing.assert_allclose(out[0][:, 0], 2.0 * min_jerk((t - 0.2) / 0.5)[0], atol=1e-15)
    np.testing.assert_allclose(out[2][:, 1], -min_jerk((t - 0.2) / 0.5)[2] / 0.25, atol=1e-12)


def test_body_response_scales_with_amplitude_and_opposes_direction() -> None:
    sc = Scenario(ScenarioOptions(direction="left", translation_amplitude_m=0.16), 0.0)
    tr = sc.trials_between(0.0, 5.0)[0]
    t = tr.response_onset_t_s + np.linspace(-0.1, 2.0, 2101)
    pos, _, _ = sc.body.response([tr], t, sc.amplitude_ref)
    assert np.all(pos[:, 0] == 0.0)
    assert pos[:, 1].min() == pytest.approx(-2 * BodyOptions().response_com_mm * 1e-3)
    assert np.all(pos[t <= tr.response_onset_t_s] == 0.0)


async def test_scenario_is_shared_and_mismatches_are_refused() -> None:
    clock = VirtualClock(5.0)
    ctx = DriverContext(clock=clock)
    a = SimEmgDriver("emg", {"scenario": {"seed": 4}}, ctx)
    b = SimImuDriver("imu", {"scenario": {"seed": 4}}, ctx)
    c = SimForcePlateDriver("plate", {"scenario": {"seed": 5}}, ctx)
    await a.open()
    await clock.sleep_until(7.0)
    await b.open()
    assert ctx.shared[SCENARIO_KEY] is a.scenario is b.scenario
    assert a.scenario is not None
    assert a.scenario.epoch_s == 5.0
    with pytest.raises(DeviceError, match="same \\[scenario\\] table"):
        await c.open()
    for d in (a, b):
        await d.close()


def test_options_errors_name_the_field() -> None:
    ctx = DriverContext(clock=VirtualClock())
    with pytest.raises(ConfigError) as err:
        SimEmgDriver("emg", {"n_channels": 2, "latency_mean_ms": [50.0, 60.0, 70.0]}, ctx)
    assert "devices.emg.options" in str(err.value)
    assert "one per channel" in str(err.value)
    with pytest.raises(ConfigError, match=r"devices\.imu\.options\.clock\.drift_ppm"):
        SimImuDriver("imu", {"clock": {"drift_ppm": 500.0}}, ctx)
    with pytest.raises(ConfigError, match="not permitted; did you mean 'trigger_pulse_ms'"):
        SimPlatformDriver("platform", {"trigger_pulse": 3}, ctx)


def test_describe_names_streams_and_honours_options() -> None:
    plat = SimPlatformDriver.describe("platform", {})
    assert [d.stream_id for d in plat] == ["platform.trigger", "platform.imu"]
    assert [d.kind for d in plat] == [StreamKind.TRIGGER, StreamKind.IMU]
    emg = SimEmgDriver.describe("emg", {"n_channels": 16, "clock": {"counter_bits": 24}})
    assert emg[0].stream_id == "emg.emg"
    assert emg[0].n_channels == 16
    assert emg[0].rate_hz == 2000.0
    assert emg[0].counter_bits == 24
    assert emg[0].channels[0].unit == "uV"
    plate = SimForcePlateDriver.describe("plate", {})
    assert plate[0].channel_names == ("Fx", "Fy", "Fz", "Mx", "My", "Mz")
    assert plate[0].timestamp_hz == 0.0
    imu = SimImuDriver.describe("imu", {"rate_hz": 500.0})
    assert imu[0].rate_hz == 500.0
    assert imu[0].timestamp_hz == 1e6


def test_drivers_are_found_through_entry_points() -> None:
    ctx = DriverContext(clock=VirtualClock())
    for name, cls in (
        ("sim.platform", SimPlatformDriver),
        ("sim.emg", SimEmgDriver),
        ("sim.forceplate", SimForcePlateDriver),
        ("sim.imu", SimImuDriver),
    ):
        assert load_driver(name) is cls
        drv = cls("dev", {}, ctx)
        assert isinstance(drv, Driver)
        assert list(drv.streams) == cls.describe("dev", {})
