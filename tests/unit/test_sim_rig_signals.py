"""Simulated rig: the signals deliver the statistics they promise, at the truth's times."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nmcore.driver import DriverContext
from nmcore.dsp import butter_sos, sosfiltfilt
from nmcore.hostclock import VirtualClock
from nmcore.sim.forceplate import cop_from_plate
from nmcore.sim.run import run_station, stream_record
from nmcore.sim.scenario import G_MPS2
from nmcore_drivers.sim import (
    SimEmgDriver,
    SimForcePlateDriver,
    SimImuDriver,
    SimPlatformDriver,
)

T0_S = 20.0
# a short platform cycle so many trials fit in a short run
FAST_TRIALS = {
    "first_trial_s": 1.0,
    "trial_period_s": 2.0,
    "trial_jitter_s": 0.2,
    "return_after_ms": 300.0,
    "return_duration_ms": 800.0,
}
IDEAL = {"kind": "ideal"}


def make_ctx() -> tuple[DriverContext, VirtualClock, list[dict[str, Any]]]:
    clock = VirtualClock(T0_S)
    truth: list[dict[str, Any]] = []
    return DriverContext(clock=clock, realtime=False, truth=truth.append), clock, truth


def of_type(truth: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in truth if r["type"] == kind]


def sample_times(truth: list[dict[str, Any]], device_id: str, sid: str, index: np.ndarray) -> Any:
    clk = next(r for r in of_type(truth, "clock") if r["device_id"] == device_id)
    return clk["t_start_s"] + index / clk["streams"][sid]["true_rate_hz"]


# -- EMG ----------------------------------------------------------------------------------------
async def test_emg_snr_matches_the_requested_db() -> None:
    ctx, clock, truth = make_ctx()
    opts = {
        "scenario": FAST_TRIALS,
        "n_channels": 3,
        "snr_db": [6.0, 12.0, 20.0],
        "burst_duration_ms": 600.0,
        "burst_duration_sd_ms": 0.0,
        "transport": IDEAL,
    }
    drv = SimEmgDriver("emg", opts, ctx)
    run = await run_station([drv], clock, T0_S + 40.0)
    rec = stream_record(run.blocks["emg.emg"], 16)
    onsets = of_type(truth, "muscle_onset")
    assert len(onsets) >= 3 * 15
    for c, snr_db in enumerate((6.0, 12.0, 20.0)):
        noise_p, total_p = [], []
        for r in (r for r in onsets if r["channel"] == c):
            i = int(r["index"])
            if i + 1200 > rec.index[-1]:
                continue
            noise_p.append(np.mean(rec.data[i - 800 : i - 100, c] ** 2))
            total_p.append(np.mean(rec.data[i + 100 : i + 1100, c] ** 2))
        noise = np.mean(noise_p)
        burst = np.mean(total_p) - noise  # burst and background are independent
        measured_db = 10.0 * np.log10(burst / noise)
        assert measured_db == pytest.approx(snr_db, abs=1.0)


async def test_emg_latencies_follow_the_per_muscle_distribution() -> None:
    ctx, clock, truth = make_ctx()
    opts = {
        "scenario": FAST_TRIALS | {"seed": 3},
        "n_channels": 2,
        "channel_names": ["TA", "SOL"],
        "latency_mean_ms": [60.0, 110.0],
        "latency_sd_ms": [8.0, 15.0],
        "transport": IDEAL,
    }
    drv = SimEmgDriver("emg", opts, ctx)
    run = await run_station([drv], clock, T0_S + 130.0)
    rec = stream_record(run.blocks["emg.emg"], 16)
    trials = {r["trial"]: r for r in of_type(truth, "trial")}
    onsets = of_type(truth, "muscle_onset")
    for c, (mean, sd, name) in enumerate(((60.0, 8.0, "TA"), (110.0, 15.0, "SOL"))):
        rows = [r for r in onsets if r["channel"] == c]
        assert all(r["muscle"] == name for r in rows)
        lat = np.array([r["latency_ms"] for r in rows])
        n = lat.size
        assert n >= 60
        assert lat.mean() == pytest.approx(mean, abs=3.5 * sd / np.sqrt(n))
        assert lat.std(ddof=1) == pytest.approx(sd, rel=0.3)
        for r in rows:
            # the truth is consistent: onset = motion onset + latency, on a sample
            assert r["t_s"] == pytest.approx(
                trials[r["trial"]]["motion_onset_t_s"] + r["latency_ms"] / 1000.0, abs=1e-9
            )
            t_idx = sample_times(truth, "emg", "emg.emg", np.array([r["index"]]))[0]
            assert r["t_s"] == pytest.approx(t_idx, abs=1e-9)
        # and the data agree: energy jumps exactly at the truth onset (20 dB default)
        for r in rows[:20]:
            i = int(r["index"])
            before = np.sqrt(np.mean(rec.data[i - 60 : i, c] ** 2))
            after = np.sqrt(np.mean(rec.data[i : i + 60, c] ** 2))
            assert after > 4.0 * before


# -- force plate --------------------------------------------------------------------------------
QUIET = {"first_trial_s": 1000.0}


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_quiet_standing_cop_statistics(seed: int) -> None:
    ctx, clock, _ = make_ctx()
    opts = {"scenario": QUIET | {"seed": seed}, "mass_kg": 82.0, "transport": IDEAL}
    drv = SimForcePlateDriver("plate", opts, ctx)
    run = await run_station([drv], clock, T0_S + 60.0)
    rec = stream_record(run.blocks["plate.force"], 16)
    fz = rec.data[:, 2]
    assert fz.mean() == pytest.approx(82.0 * G_MPS2, rel=5e-4)
    cop = cop_from_plate(rec.data, 0.04)
    # usual posturography processing: 10 Hz low-pass forwards and backwards
    cop_f = sosfiltfilt(butter_sos(4, 10.0, 1000.0, "lowpass"), cop)
    ml_rms_mm, ap_rms_mm = (cop_f - cop_f.mean(0)).std(0) * 1000.0
    assert 3.0 <= ap_rms_mm <= 6.0
    assert 2.0 <= ml_rms_mm <= 4.0
    step = np.diff(cop_f[::10], axis=0)  # 100 Hz
    mean_velocity_mm_s = np.mean(np.hypot(step[:, 0], step[:, 1])) / 0.01 * 1000.0
    assert 5.0 <= mean_velocity_mm_s <= 15.0


async def test_plate_channels_encode_the_model_cop_and_com_acceleration() -> None:
    ctx, clock, truth = make_ctx()
    opts = {
        "scenario": FAST_TRIALS | {"direction": "random"},
        "plate_dz_m": 0.038,
        "stance_x_m": 0.01,
        "stance_y_m": -0.02,
        "force_noise_n": 0.0,
        "moment_noise_nm": 0.0,
        "transport": IDEAL,
    }
    drv = SimForcePlateDriver("plate", opts, ctx)
    run = await run_station([drv], clock, T0_S + 8.0)
    rec = stream_record(run.blocks["plate.force"], 16)
    t = sample_times(truth, "plate", "plate.force", rec.index)
    scenario = drv.scenario
    assert scenario is not None
    pos, _vel, acc, trials = scenario.body_com(t)
    assert trials  # responses are inside the span
    # independent reference of the quiet sway (plain numpy, any grid)
    ref_pos, _, ref_acc = scenario.body.sway_reference(t)
    rp, _, ra = scenario.body.response(trials, t, scenario.amplitude_ref)
    np.testing.assert_allclose(pos, ref_pos + rp, atol=1e-9)
    np.testing.assert_allclose(acc, ref_acc + ra, atol=1e-8)
    hg = scenario.body.h_over_g
    model_cop = np.column_stack(
        [0.01 + pos[:, 1] - hg * acc[:, 1], -0.02 + pos[:, 0] - hg * acc[:, 0]]
    )
    np.testing.assert_allclose(cop_from_plate(rec.data, 0.038), model_cop, atol=1e-12)
    # shear = minus mass times COM acceleration (x = ML, y = AP)
    np.testing.assert_allclose(rec.data[:, 0], -70.0 * acc[:, 1], atol=1e-9)
    np.testing.assert_allclose(rec.data[:, 1], -70.0 * acc[:, 0], atol=1e-9)


async def test_force_response_starts_exactly_at_its_truth_onset() -> None:
    ctx, clock, truth = make_ctx()
    opts = {
        "scenario": FAST_TRIALS,
        "force_noise_n": 0.0,
        "moment_noise_nm": 0.0,
        "transport": IDEAL,
    }
    drv = SimForcePlateDriver("plate", opts, ctx)
    run = await run_station([drv], clock, T0_S + 12.0)
    rec = stream_record(run.blocks["plate.force"], 16)
    t = sample_times(truth, "plate", "plate.force", rec.index)
    scenario = drv.scenario
    assert scenario is not None
    sway_pos, _, sway_acc = scenario.body.sway_reference(t)
    sway_cop_y = sway_pos[:, 0] - scenario.body.h_over_g * sway_acc[:, 0]
    dev_mm = (cop_from_plate(rec.data, 0.04)[:, 1] - sway_cop_y) * 1000.0
    responses = of_type(truth, "force_response")
    trials = {r["trial"]: r for r in of_type(truth, "trial")}
    assert len(responses) >= 4
    for r in responses:
        assert r["latency_ms"] == pytest.approx(
            (r["t_s"] - trials[r["trial"]]["motion_onset_t_s"]) * 1000.0
        )
        i = int(np.searchsorted(t, r["t_s"]))
        assert np.abs(dev_mm[i - 200 : i]).max() < 1e-6  # nothing before the onset
        assert np.abs(dev_mm[i + 20 : i + 200]).max() > 5.0  # a clear response after
    lat = np.array([r["latency_ms"] for r in responses])
    assert np.all((lat > 50.0) & (lat < 180.0))


async def test_hop_landings_match_the_truth() -> None:
    ctx, clock, truth = make_ctx()
    opts = {"scenario": QUIET, "hop_period_s": 4.0, "first_hop_s": 2.0, "transport": IDEAL}
    drv = SimForcePlateDriver("plate", opts, ctx)
    run = await run_station([drv], clock, T0_S + 15.0)
    rec = stream_record(run.blocks["plate.force"], 16)
    t = sample_times(truth, "plate", "plate.force", rec.index)
    fz = rec.data[:, 2]
    # the truth may run ahead of the delivered data (generators work in chunks)
    landings = [r for r in of_type(truth, "landing") if r["landing_t_s"] + 3.0 < t[-1]]
    assert len(landings) == 3
    bw = 70.0 * G_MPS2
    for r in landings:
        assert r["landing_t_s"] - r["takeoff_t_s"] == pytest.approx(r["flight_s"])
        flight = (t > r["takeoff_t_s"] + 0.01) & (t < r["landing_t_s"] - 0.01)
        assert np.abs(fz[flight]).max() < 2.0  # noise only while airborne
        after = (t >= r["landing_t_s"]) & (t < r["landing_t_s"] + 0.3)
        assert fz[after].max() == pytest.approx(r["peak_force_n"], rel=0.01)
        assert r["peak_force_n"] > 2.0 * bw
        settled = (t > r["landing_t_s"] + 2.5) & (t < r["landing_t_s"] + 3.0)
        assert fz[settled].mean() == pytest.approx(bw, rel=0.01)


# -- platform and body IMU ----------------------------------------------------------------------
async def test_trigger_edge_is_the_first_sample_at_the_perturbation_onset() -> None:
    ctx, clock, truth = make_ctx()
    drv = SimPlatformDriver("platform", {"scenario": FAST_TRIALS, "transport": IDEAL}, ctx)
    run = await run_station([drv], clock, T0_S + 12.0)
    rec = stream_record(run.blocks["platform.trigger"], 16)
    t = sample_times(truth, "platform", "platform.trigger", rec.index)
    trig = rec.data[:, 0]
    assert set(np.unique(trig)) == {0.0, 1.0}
    edges = t[1:][np.diff(trig) > 0.5]
    trials = [r["t_s"] for r in of_type(truth, "trial") if r["t_s"] < t[-1] - 0.1]
    assert len(edges) == len(trials) >= 5
    # the platform raises the line on one of its samples: the edge is the onset, exactly
    np.testing.assert_allclose(edges, trials, atol=1e-9)


@pytest.mark.parametrize(
    ("kind", "direction"), [("translation", "forward"), ("tilt", "left"), ("tilt", "forward")]
)
async def test_platform_imu_shows_the_perturbation(kind: str, direction: str) -> None:
    ctx, clock, truth = make_ctx()
    scen = FAST_TRIALS | {
        "kind": kind,
        "direction": direction,
        "tilt_amplitude_deg": 5.0,
        "translation_amplitude_m": 0.1,
    }
    drv = SimPlatformDriver("platform", {"scenario": scen, "transport": IDEAL}, ctx)
    run = await run_station([drv], clock, T0_S + 6.0)
    rec = stream_record(run.blocks["platform.imu"], 16)
    t = sample_times(truth, "platform", "platform.imu", rec.index)
    dt = 1e-3
    trial = of_type(truth, "trial")[0]
    t0 = trial["motion_onset_t_s"]
    rest = (t > t0 - 0.5) & (t < t0)
    bias = rec.data[rest].mean(0)
    move = (t >= t0) & (t < t0 + 0.3 + 0.05)
    if kind == "translation":
        acc = rec.data[move, 0] - bias[0]
        disp = np.sum(np.cumsum(acc) * dt) * dt
        assert disp == pytest.approx(0.1, rel=0.03)
    else:
        axis, sign = (4, 1.0) if direction == "forward" else (3, -1.0)
        angle = np.sum(rec.data[move, axis] - bias[axis]) * dt
        assert sign * angle == pytest.approx(5.0, rel=0.03)
        hold = (t > t0 + 0.35) & (t < t0 + 0.6)
        acc_axis = 0 if direction == "forward" else 1
        assert rec.data[hold, acc_axis].mean() == pytest.approx(
            -G_MPS2 * np.sin(np.radians(5.0)) + bias[acc_axis], abs=0.02
        )


async def test_body_imu_sways_and_responds_at_the_truth_onset() -> None:
    ctx, clock, truth = make_ctx()
    opts = {
        "scenario": FAST_TRIALS | {"kind": "tilt"},
        "acc_noise_rms_mps2": 0.0,
        "gyro_noise_rms_dps": 0.0,
        "transport": IDEAL,
    }
    drv = SimImuDriver("imu", opts, ctx)
    run = await run_station([drv], clock, T0_S + 10.0)
    rec = stream_record(run.blocks["imu.imu"], 16)
    t = sample_times(truth, "imu", "imu.imu", rec.index)
    gyro_y = rec.data[:, 4]
    quiet = t < of_type(truth, "trial")[0]["t_s"]
    sway_dps = gyro_y[quiet] - gyro_y[quiet].mean()
    assert 0.01 < sway_dps.std() < 1.0  # a little sway, no more
    responses = of_type(truth, "imu_response")
    assert len(responses) >= 3
    for r in responses:
        before = (t > r["t_s"] - 0.3) & (t < r["t_s"])
        after = (t >= r["t_s"]) & (t < r["t_s"] + 0.3)
        assert np.ptp(gyro_y[after]) > 5.0 * np.ptp(gyro_y[before])


def test_cop_convention_and_ranges_agree_with_a_real_amti_recording() -> None:
    """Our COP formula reproduces the AMTI export's own COP (moments about the surface,
    dz = 0), and the real quiet stance lies in the ranges the simulation promises."""
    path = Path(__file__).parents[2] / "../shared/data/forceplate/amti_quiet_standing.csv"
    if not path.exists():
        pytest.skip(f"reference data not found at {path}")
    d = np.genfromtxt(path, delimiter=",", skip_header=33)
    d = d[d[:, 5] > 0]  # dropped frames are all zeros
    cop = cop_from_plate(d[:, 3:9], 0.0)
    np.testing.assert_allclose(cop, d[:, 9:11], atol=1e-6)
    seg = sosfiltfilt(butter_sos(4, 10.0, 100.0, "lowpass"), cop[4000:7000])
    ml_rms_mm, ap_rms_mm = (seg - seg.mean(0)).std(0) * 1000.0
    assert 3.0 <= ap_rms_mm <= 6.0
    assert 2.0 <= ml_rms_mm <= 4.0
    step = np.diff(seg, axis=0)
    assert 5.0 <= np.mean(np.hypot(step[:, 0], step[:, 1])) / 0.01 * 1000.0 <= 15.0


async def test_emg_interference_options_reach_the_signal() -> None:
    ctx, clock, _ = make_ctx()
    opts = {
        "scenario": QUIET,
        "n_channels": 1,
        "mains_hz": 60.0,
        "mains_uv": 20.0,
        "transport": IDEAL,
    }
    drv = SimEmgDriver("emg", opts, ctx)
    run = await run_station([drv], clock, T0_S + 4.0)
    x = stream_record(run.blocks["emg.emg"], 16).data[:4000, 0]
    spec = np.abs(np.fft.rfft(x)) / x.size * 2.0
    freqs = np.fft.rfftfreq(x.size, 1 / 2000.0)
    assert freqs[np.argmax(spec)] == pytest.approx(60.0, abs=0.6)
    assert spec.max() == pytest.approx(20.0, rel=0.1)


async def test_truth_is_json_and_in_the_clock_time_base() -> None:
    ctx, clock, truth = make_ctx()
    scen = FAST_TRIALS | {"direction": "random"}
    drivers = [
        SimPlatformDriver("platform", {"scenario": scen}, ctx),
        SimEmgDriver("emg", {"scenario": scen}, ctx),
        SimForcePlateDriver("plate", {"scenario": scen, "hop_period_s": 3.0}, ctx),
        SimImuDriver("imu", {"scenario": scen, "faults": {"drop_packet_prob": 0.01}}, ctx),
    ]
    await run_station(drivers, clock, T0_S + 8.0)
    assert json.loads(json.dumps(truth)) == truth
    kinds = {r["type"] for r in truth}
    assert {"clock", "trial", "muscle_onset", "force_response", "imu_response"} <= kinds
    assert {"landing", "loss"} <= kinds
    for r in truth:
        if "t_s" in r:
            assert T0_S <= r["t_s"] < T0_S + 10.0
    assert drivers[0].scenario is not None
    assert list(drivers[0].scenario.truth) == truth
