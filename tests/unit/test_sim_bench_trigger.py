"""Calibration bench: trigger delay, loopback pulses, calibration mode suspending trials, and
actions that never change a sample once it has been generated."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nmcore.driver import DriverContext
from nmcore.errors import DeviceError
from nmcore.hostclock import VirtualClock
from nmcore.sim.base import SimDriverBase
from nmcore.sim.bench import Bench
from nmcore.sim.run import run_station, stream_record

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "emulators"))
import bench_harness as harness
from bench_harness import run_script, sample_times

from nmcore_drivers.sim import (
    SimEmgDriver,
    SimForcePlateDriver,
    SimImuDriver,
    SimPlatformDriver,
)

T0_S = 25.0
make_ctx = partial(harness.make_ctx, T0_S)
IDEAL = {"kind": "ideal"}
FAST_TRIALS = {
    "first_trial_s": 1.0,
    "trial_period_s": 2.0,
    "trial_jitter_s": 0.2,
    "return_after_ms": 300.0,
    "return_duration_ms": 800.0,
}


def rising_edges(data: Any) -> Any:
    x = data[:, 0]
    return np.flatnonzero((x[1:] > 0.5) & (x[:-1] < 0.5)) + 1


@pytest.mark.parametrize("delay_ms", [0.0, 7.0, 2.5])
async def test_trigger_delay_moves_the_trial_edges(delay_ms: float) -> None:
    ctx, clock, truth = make_ctx()
    opts = {"scenario": FAST_TRIALS, "transport": IDEAL, "trigger_delay_ms": delay_ms}
    drv = SimPlatformDriver("pf", opts, ctx)
    run = await run_station([drv], clock, T0_S + 12.0)
    rec = stream_record(run.blocks["pf.trigger"], 16)
    t = sample_times(truth, "pf", "pf.trigger", rec.index)
    edges_t = t[rising_edges(rec.data)]
    trials = [r["t_s"] for r in truth if r["type"] == "trial" and r["t_s"] < t[-1] - 0.1]
    assert len(trials) >= 5
    assert edges_t.size == len(trials)
    lag_s = edges_t - np.asarray(trials)
    # the first sample at or after trigger + delay
    assert np.all(lag_s >= delay_ms / 1000.0 - 1e-9)
    assert np.all(lag_s < delay_ms / 1000.0 + 1.0 / 1000.0)
    if delay_ms == 0.0:
        np.testing.assert_allclose(lag_s, 0.0, atol=1e-9)
    assert drv.truth_errors()["trigger_delay_ms"] == delay_ms


async def test_loopback_edge_shows_the_delay_after_the_returned_device_time() -> None:
    ctx, clock, truth = make_ctx()
    bench = Bench.install(ctx.shared, clock)
    delay_ms = 4.3
    opts = {
        "transport": {"kind": "serial"},
        "trigger_delay_ms": delay_ms,
        "clock": {"offset_s": 7.25},
    }
    drv = SimPlatformDriver("pf", opts, ctx)
    returned: list[float] = []
    script = [
        (T0_S + 1.0, lambda: returned.append(bench.loopback_trigger("pf", 0.05))),
        (T0_S + 2.0, lambda: returned.append(bench.loopback_trigger("pf", 0.02))),
    ]
    run = await run_script([drv], clock, T0_S + 3.5, script)
    rec = stream_record(run.blocks["pf.trigger"], 16, 32)
    assert rec.block_ticks is not None
    edges = rising_edges(rec.data)
    assert edges.size == 2
    # device time of each edge sample from the packets' own timestamps
    ticks_per_sample = 1e6 / 1000.0
    block = np.searchsorted(rec.block_first, rec.index[edges], "right") - 1
    edge_ticks = (
        rec.block_ticks[block] + (rec.index[edges] - rec.block_first[block]) * ticks_per_sample
    )
    edge_device_s = edge_ticks / 1e6
    lag_s = edge_device_s - np.asarray(returned)
    assert np.all(lag_s >= delay_ms / 1000.0 - 1e-6)
    assert np.all(lag_s < delay_ms / 1000.0 + 1.0 / 1000.0 + 1e-6)
    # the pulses last as asked
    falls = np.flatnonzero((rec.data[1:, 0] < 0.5) & (rec.data[:-1, 0] > 0.5)) + 1
    np.testing.assert_array_equal(falls - edges, [50, 20])
    loops = [a for a in bench.truth()["actions"] if a["action"] == "loopback"]
    assert [a["device_time_s"] for a in loops] == returned
    # settle_s, then a random phase within one sample period (the output is not clocked by
    # the input's sampling)
    out_t = np.asarray([a["t_s"] for a in loops]) - [T0_S + 1.5, T0_S + 2.5]
    assert np.all((out_t >= 0.0) & (out_t < 1.0 / 1000.0 + 1e-9))
    assert [a["device_ticks"] for a in loops] == [round(r * 1e6) for r in returned] or all(
        abs(a["device_ticks"] - r * 1e6) <= 1.0 for a, r in zip(loops, returned, strict=True)
    )
    t = sample_times(truth, "pf", "pf.trigger", rec.index)
    np.testing.assert_allclose(t[edges], [a["line_t_s"] for a in loops], atol=1e-12)


async def test_driver_loopback_coroutine_returns_raw_ticks_once_the_output_is_high() -> None:
    ctx, clock, truth = make_ctx()
    opts = {"transport": IDEAL, "trigger_delay_ms": 2.0, "clock": {"timestamp_bits": 20}}
    drv = SimPlatformDriver("pf", opts, ctx)
    got: list[tuple[int, float]] = []

    async def fire() -> None:
        ticks = await drv.loopback_trigger(0.03)
        got.append((ticks, clock.now()))

    run = await run_script([drv], clock, T0_S + 2.0, [(T0_S + 1.0, fire)])
    ticks, returned_at = got[0]
    rec_truth = next(r for r in truth if r["type"] == "loopback")
    assert ticks == rec_truth["device_ticks"]
    assert 0 <= ticks < 2**20  # raw, wrapped like the packets' timestamps
    assert returned_at == rec_truth["t_s"] >= T0_S + 1.0
    rec = stream_record(run.blocks["pf.trigger"], 16)
    t = sample_times(truth, "pf", "pf.trigger", rec.index)
    edge = rising_edges(rec.data)
    assert edge.size == 1
    assert t[edge[0]] == pytest.approx(rec_truth["line_t_s"], abs=1e-12)
    assert 0.002 - 1e-9 <= t[edge[0]] - rec_truth["t_s"] < 0.003


async def test_loopback_needs_a_trigger_line_and_a_timestamp_clock() -> None:
    ctx, clock, _ = make_ctx()
    emg = SimEmgDriver("emg", {"transport": IDEAL}, ctx)
    counter_only = SimPlatformDriver(
        "pf", {"transport": IDEAL, "clock": {"timestamp_hz": 0.0}}, ctx
    )
    with pytest.raises(DeviceError, match="open"):
        await counter_only.loopback_trigger(0.01)
    await emg.open()
    await counter_only.open()
    with pytest.raises(DeviceError, match="trigger line"):
        await emg.loopback_trigger(0.01)
    with pytest.raises(DeviceError, match="timestamp_hz"):
        await counter_only.loopback_trigger(0.01)
    with pytest.raises(ValueError, match="pulse_s"):
        Bench.install(ctx.shared, clock).loopback("emg", 0.0)


async def test_calibration_mode_installed_before_open_has_no_trials() -> None:
    ctx, clock, truth = make_ctx()
    bench = Bench.install(ctx.shared, clock)
    common = {"scenario": FAST_TRIALS, "transport": IDEAL}
    drivers: list[SimDriverBase] = [
        SimPlatformDriver("pf", {**common, "scenario": {**FAST_TRIALS, "kind": "tilt"}}, ctx),
        SimEmgDriver("emg", {**common, "scenario": {**FAST_TRIALS, "kind": "tilt"}}, ctx),
    ]
    run = await run_station(drivers, clock, T0_S + 8.0)
    assert not [r for r in truth if r["type"] in ("trial", "muscle_onset")]
    trig = stream_record(run.blocks["pf.trigger"], 16)
    assert not np.any(trig.data)
    imu = stream_record(run.blocks["pf.imu"], 16)
    assert np.all(np.std(imu.data[:, 3:], axis=0) < 0.2)  # the platform never moves
    assert bench.calibration_from_s == T0_S


async def test_calibration_mode_installed_mid_run_stops_trials() -> None:
    ctx, clock, truth = make_ctx()
    drivers: list[SimDriverBase] = [
        SimPlatformDriver("pf", {"scenario": FAST_TRIALS, "transport": IDEAL}, ctx),
        SimEmgDriver("emg", {"scenario": FAST_TRIALS, "transport": IDEAL}, ctx),
    ]
    benches: list[Bench] = []
    script = [(T0_S + 6.0, lambda: benches.append(Bench.install(ctx.shared, clock)))]
    run = await run_script(drivers, clock, T0_S + 16.0, script)
    t_cal = benches[0].calibration_from_s
    trials = [r["t_s"] for r in truth if r["type"] == "trial"]
    assert len(trials) >= 2
    assert max(trials) < t_cal + 0.5  # at most one drawn ahead still runs
    trig = stream_record(run.blocks["pf.trigger"], 16)
    t = sample_times(truth, "pf", "pf.trigger", trig.index)
    assert not np.any(trig.data[t > max(trials) + 0.1])
    emg = stream_record(run.blocks["emg.emg"], 16)
    te = sample_times(truth, "emg", "emg.emg", emg.index)
    quiet = emg.data[te > max(trials) + 1.0]
    assert quiet.shape[0] > 10_000
    np.testing.assert_allclose(np.sqrt(np.mean(quiet**2, axis=0)), 5.0, rtol=0.1)  # at rest


async def test_actions_never_change_generated_samples() -> None:
    """The same station run with and without actions made with settle_s = 0: every sample
    before an action's effective time is identical, and the effective time lies after every
    sample the device had generated when the action was called."""
    runs = []
    for act in (False, True):
        ctx, clock, truth = make_ctx()
        opts = {"transport": {"kind": "serial"}}
        drivers: list[SimDriverBase] = [
            SimPlatformDriver("pf", opts, ctx),
            SimEmgDriver("emg", opts, ctx),
            SimImuDriver("imu", {"transport": {"kind": "ble"}}, ctx),
            SimForcePlateDriver("fp", opts, ctx),
        ]
        horizons: dict[str, float] = {}
        bench_box: list[Bench] = []

        def install(
            ctx: DriverContext = ctx, clock: VirtualClock = clock, box: Any = bench_box
        ) -> None:
            box.append(Bench.install(ctx.shared, clock, settle_s=0.0))

        def actions(
            act: bool = act,
            drivers: list[SimDriverBase] = drivers,
            box: Any = bench_box,
            h: Any = horizons,
        ) -> None:
            for d in drivers:
                dev = d.device
                assert dev is not None
                h[d.device_id] = dev.generated_until_s()
            if not act:
                return
            bench = box[0]
            bench.loopback("pf", 0.01)
            bench.move_imu("pf", 10.0)
            bench.contract("emg", 0.5)
            bench.rotate_imu("imu", (1, 0, 0), 30.0, 1.0)
            bench.place_masses("fp", [(20.0, 0.0, 0.0)])

        script = [(T0_S + 1.0, install), (T0_S + 2.13, actions)]  # mid-chunk
        run = await run_script(drivers, clock, T0_S + 3.5, script)
        runs.append((run, truth, horizons, bench_box[0]))
    (plain, _, _, _), (acted, truth, horizons, bench) = runs
    effective = {a["device_id"]: a["t_s"] for a in bench.truth()["actions"] if "device_id" in a}
    assert set(effective) == {"pf", "emg", "imu", "fp"}
    assert min(horizons.values()) > T0_S + 2.2  # some generator had run ahead of the call
    for sid, bits in (
        ("pf.trigger", 16),
        ("pf.imu", 16),
        ("emg.emg", 16),
        ("imu.imu", 16),
        ("fp.force", 24),
    ):
        dev_id = sid.split(".")[0]
        assert effective[dev_id] >= horizons[dev_id]
        a = stream_record(plain.blocks[sid], bits)
        b = stream_record(acted.blocks[sid], bits)
        n = min(a.index.size, b.index.size)
        t = sample_times(truth, dev_id, sid, b.index[:n])
        old = t < effective[dev_id] - 1e-9
        assert old.sum() > 0.5 * n
        np.testing.assert_array_equal(a.data[:n][old], b.data[:n][old])
        assert not np.array_equal(a.data[:n][~old], b.data[:n][~old])  # the action did show
        if sid == "fp.force":
            # the truth's effective time is when the data change: the mass is on from then
            assert np.all(b.data[:n][~old, 2] > 150.0)
            assert np.all(b.data[:n][old][-100:, 2] < 5.0)
