"""Simulated rig: device clocks, counters, transports and faults against the ground truth."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from nmcore.driver import DriverContext
from nmcore.errors import ConfigError, DeviceGoneError
from nmcore.hostclock import MonotonicClock, VirtualClock
from nmcore.sim.run import run_station, stream_record
from nmcore_drivers.sim import (
    SimEmgDriver,
    SimForcePlateDriver,
    SimImuDriver,
    SimPlatformDriver,
)

T0_S = 50.0


def make_ctx() -> tuple[DriverContext, VirtualClock, list[dict[str, Any]]]:
    clock = VirtualClock(T0_S)
    truth: list[dict[str, Any]] = []
    return DriverContext(clock=clock, realtime=False, truth=truth.append), clock, truth


def clock_truth(truth: list[dict[str, Any]], device_id: str) -> dict[str, Any]:
    return next(r for r in truth if r["type"] == "clock" and r["device_id"] == device_id)


def merged_losses(truth: list[dict[str, Any]], stream_id: str) -> list[tuple[int, int]]:
    """(first_index, n_samples) of the truth's losses, adjacent ones merged."""
    recs = sorted(
        (r for r in truth if r["type"] == "loss" and r["stream_id"] == stream_id),
        key=lambda r: r["first_index"],
    )
    out: list[list[int]] = []
    for r in recs:
        if out and out[-1][0] + out[-1][1] == r["first_index"]:
            out[-1][1] += r["n_samples"]
        else:
            out.append([r["first_index"], r["n_samples"]])
    return [(a, b) for a, b in out]


def counter_gaps(first: np.ndarray, sizes: np.ndarray) -> list[tuple[int, int]]:
    ends = first[:-1] + sizes[:-1]
    gap = first[1:] - ends
    return [(int(ends[i]), int(gap[i])) for i in np.flatnonzero(gap)]


@pytest.mark.parametrize("drift_ppm", [-150.0, 0.0, 85.0])
async def test_device_timestamps_drift_at_the_requested_ppm(drift_ppm: float) -> None:
    ctx, clock, truth = make_ctx()
    opts = {
        "clock": {"drift_ppm": drift_ppm, "timestamp_bits": 24, "offset_s": 3.0},
        "transport": {"kind": "ideal"},
    }
    drv = SimImuDriver("imu", opts, ctx)
    run = await run_station([drv], clock, T0_S + 40.0)
    blocks = run.blocks["imu.imu"]
    rec = stream_record(blocks, 16, 24)
    assert rec.block_ticks is not None
    raw_ticks = np.array([b.device_ticks for b in blocks])
    assert np.any(np.diff(raw_ticks) < 0), "24-bit ticks at 1 MHz must wrap within 40 s"
    assert raw_ticks[0] == round(3.0 * 1e6) % 2**24
    # ideal transport: arrival = true time of the packet's last sample (P - 1 after the first)
    p = blocks[0].n_samples
    device_s = (rec.block_ticks + (p - 1) * 1000) / 1e6
    slope = np.polyfit(rec.block_arrival_s - rec.block_arrival_s[0], device_s, 1)[0]
    assert (slope - 1.0) * 1e6 == pytest.approx(drift_ppm, abs=0.05)
    clk = clock_truth(truth, "imu")
    assert clk["drift_ppm"] == drift_ppm
    assert clk["streams"]["imu.imu"]["true_rate_hz"] == pytest.approx(1000 * (1 + drift_ppm * 1e-6))


async def test_counters_wrap_and_stay_contiguous() -> None:
    ctx, clock, _ = make_ctx()
    drv = SimForcePlateDriver(
        "plate", {"clock": {"counter_bits": 8}, "transport": {"kind": "serial"}}, ctx
    )
    run = await run_station([drv], clock, T0_S + 5.0)
    blocks = run.blocks["plate.force"]
    raw = np.array([b.counter for b in blocks])
    assert raw.max() < 256
    assert np.sum(np.diff(raw) < 0) >= 15  # 5000 samples / 256
    rec = stream_record(blocks, 8)
    np.testing.assert_array_equal(rec.index, np.arange(rec.index.size))
    assert drv.streams[0].counter_bits == 8


async def test_serial_delivers_in_16_ms_bursts_never_before_the_samples_exist() -> None:
    ctx, clock, truth = make_ctx()
    drv = SimEmgDriver("emg", {"transport": {"kind": "serial", "serial_jitter_ms": 0.5}}, ctx)
    run = await run_station([drv], clock, T0_S + 10.0)
    blocks = run.blocks["emg.emg"]
    rec = stream_record(blocks, 16)
    arrivals = np.unique(rec.block_arrival_s)
    gaps_ms = np.diff(arrivals) * 1000.0
    assert np.all((gaps_ms > 15.4) & (gaps_ms < 16.6))
    assert np.mean(gaps_ms) == pytest.approx(16.0, abs=0.02)
    clk = clock_truth(truth, "emg")
    k = clk["streams"]["emg.emg"]["true_rate_hz"]
    sizes = np.array([b.n_samples for b in blocks])
    last_true = clk["t_start_s"] + (rec.block_first + sizes - 1) / k
    wait_ms = (rec.block_arrival_s - last_true) * 1000.0
    assert wait_ms.min() >= 0.0
    assert wait_ms.max() < 16.5
    # a burst carries ~2 packets (8 ms each at the default), joined into one block as the
    # serial drivers decode one read
    per_burst = np.unique(rec.block_arrival_s, return_counts=True)[1]
    assert np.all(per_burst == 1)
    assert np.all(sizes % 16 == 0)
    assert sizes.mean() == pytest.approx(32.0, abs=1.0)


@pytest.mark.parametrize("reboot_s", [0.0, 0.3])
async def test_serial_joins_only_packets_that_continue_each_other(reboot_s: float) -> None:
    """Joined blocks are exactly the runs of the per-packet blocks that share a burst and
    continue each other: a lost packet or a reset (even with no reboot time, when the sample
    index runs on but the counter and clock restart) always starts a new block."""
    opts: dict[str, Any] = {
        "clock": {"offset_s": 2.0},
        "transport": {"kind": "serial", "packet_samples": 5},
        "faults": {"drop_packet_prob": 0.05, "reset_after_s": 3.0, "reboot_s": reboot_s},
    }
    runs = {}
    for join in (False, True):
        ctx, clock, _ = make_ctx()
        drv = SimImuDriver(
            "imu", {**opts, "transport": {**opts["transport"], "join_packets": join}}, ctx
        )
        runs[join] = (await run_station([drv], clock, T0_S + 6.0)).blocks["imu.imu"]
    # run_station stops inside the last delivery event: compare the events before it
    end_s = runs[False][-1].arrival_s
    packets, joined = ([b for b in runs[j] if b.arrival_s < end_s] for j in (False, True))
    assert all(b.n_samples == 5 for b in packets)
    expected: list[list[Any]] = []
    for b in packets:
        prev = expected[-1][-1] if expected else None
        if (
            prev is not None
            and b.arrival_s == prev.arrival_s
            and b.counter == (prev.counter + 5) % 2**16
            and b.device_ticks == prev.device_ticks + 5000
        ):
            expected[-1].append(b)
        else:
            expected.append([b])
    assert len(joined) == len(expected) < len(packets) / 2
    for got, run in zip(joined, expected, strict=True):
        assert (got.counter, got.device_ticks, got.arrival_s, got.ticks_index) == (
            run[0].counter,
            run[0].device_ticks,
            run[0].arrival_s,
            0,
        )
        np.testing.assert_array_equal(got.data, np.concatenate([b.data for b in run]))
    # the reset is there, and a joined block never spans it
    counters = np.array([b.counter for b in joined])
    assert np.sum(np.diff(counters) < 0) == 1


async def test_ble_batches_at_connection_events_with_missed_events() -> None:
    ctx, clock, _ = make_ctx()
    opts = {
        "transport": {
            "kind": "ble",
            "ble_interval_ms": 20.0,
            "ble_missed_event_prob": 0.1,
            "ble_jitter_ms": 0.2,
            "packet_samples": 4,
            "ble_max_packets_per_event": 12,
        }
    }
    drv = SimImuDriver("imu", opts, ctx)
    run = await run_station([drv], clock, T0_S + 30.0)
    rec = stream_record(run.blocks["imu.imu"], 16)
    np.testing.assert_array_equal(rec.index, np.arange(rec.index.size))  # nothing lost
    arrivals, counts = np.unique(rec.block_arrival_s, return_counts=True)
    assert counts.max() <= 12
    gaps = np.diff(arrivals) / 0.020
    m = np.round(gaps)
    assert np.all(np.abs(gaps - m) < 0.2 / 20.0 + 1e-9)  # multiples of the interval
    skipped = np.sum(m - 1) / np.sum(m)
    assert 0.06 < skipped < 0.14  # missed events: the batch waited for the next one
    assert drv.device is not None
    assert drv.device.missed_events > 0
    # notifications of a few samples each, several per event
    assert counts.mean() == pytest.approx(20 * 1.0 / 4 / (1 - skipped), rel=0.1)


def test_ble_that_cannot_keep_up_is_a_config_error() -> None:
    opts = {"transport": {"kind": "ble", "ble_interval_ms": 50.0, "packet_samples": 2}}
    with pytest.raises(ConfigError, match="ble_max_packets_per_event"):
        SimImuDriver("imu", opts, DriverContext(clock=VirtualClock()))


async def test_dropped_and_corrupted_packets_match_the_truth_exactly() -> None:
    ctx, clock, truth = make_ctx()
    opts = {
        "clock": {"counter_bits": 12},
        "transport": {"kind": "ideal", "packet_samples": 5},
        "faults": {"drop_packet_prob": 0.04, "corrupt_packet_prob": 0.02},
    }
    drv = SimPlatformDriver("platform", opts, ctx)
    run = await run_station([drv], clock, T0_S + 20.0)
    for sid in ("platform.trigger", "platform.imu"):
        blocks = run.blocks[sid]
        rec = stream_record(blocks, 12)
        sizes = np.array([b.n_samples for b in blocks])
        seen = counter_gaps(rec.block_first, sizes)
        assert seen, "some packets must be lost at 6 %"
        truth_losses = [t for t in merged_losses(truth, sid) if t[0] < rec.index[-1]]
        assert seen == truth_losses
        causes = [r["cause"] for r in truth if r["type"] == "loss" and r["stream_id"] == sid]
        n_packets = rec.index[-1] // 5
        assert causes.count("drop") / n_packets == pytest.approx(0.04, abs=0.012)
        assert causes.count("crc") / n_packets == pytest.approx(0.02, abs=0.008)
        first_counters = {
            r["first_counter"] for r in truth if r["type"] == "loss" and r["stream_id"] == sid
        }
        assert first_counters <= set(range(4096))


@pytest.mark.parametrize("delivery", ["blocks", "stream"])
async def test_outages_raise_device_gone_and_the_gaps_match_the_truth(delivery: Any) -> None:
    ctx, clock, truth = make_ctx()
    opts = {
        "transport": {"kind": "serial"},
        "faults": {"disconnect_after_s": 3.0, "disconnect_duration_s": 1.5},
    }
    drv = SimImuDriver("imu", opts, ctx)
    run = await run_station([drv], clock, T0_S + 14.0, reconnect_delay_s=0.4, delivery=delivery)
    outages = [r for r in truth if r["type"] == "outage"]
    starts = [r["t_s"] for r in outages]
    assert run.gone_s["imu"] == pytest.approx(starts)
    assert starts[:3] == pytest.approx([T0_S + 3.0, T0_S + 7.5, T0_S + 12.0])
    assert run.reopen_failures["imu"] >= 3  # opening during an outage fails
    blocks = run.blocks["imu.imu"]
    rec = stream_record(blocks, 16)
    sizes = np.array([b.n_samples for b in blocks])
    seen = counter_gaps(rec.block_first, sizes)
    assert len(seen) == 3
    assert seen == merged_losses(truth, "imu.imu")
    causes = {r["cause"] for r in truth if r["type"] == "loss"}
    assert causes == {"outage"}
    # nothing arrives while the link is down
    for r in outages:
        inside = (rec.block_arrival_s >= r["t_s"]) & (rec.block_arrival_s < r["end_t_s"])
        assert not inside.any()
    # the device kept counting during the outage: the gap covers the time away
    # (outage 1.5 s, reconnection attempts every 0.4 s: back after 1.6 s)
    for _, n in seen:
        assert 1.6 <= n / 1000.0 < 1.6 + 0.04


async def test_open_during_an_outage_raises_device_gone() -> None:
    ctx, clock, _ = make_ctx()
    drv = SimPlatformDriver(
        "platform", {"faults": {"disconnect_after_s": 1.0, "disconnect_duration_s": 2.0}}, ctx
    )
    await drv.open()
    with pytest.raises(DeviceGoneError):
        async for _ in drv.blocks():
            pass
    assert clock.now() == pytest.approx(T0_S + 1.0)
    await drv.close()
    await clock.sleep_until(T0_S + 2.0)
    with pytest.raises(DeviceGoneError, match="outage"):
        await drv.open()
    await clock.sleep_until(T0_S + 3.0)
    await drv.open()
    await drv.close()


async def test_reset_restarts_counter_and_clock_and_is_in_the_truth() -> None:
    ctx, clock, truth = make_ctx()
    opts = {"transport": {"kind": "ideal"}, "faults": {"reset_after_s": 4.0, "reboot_s": 0.3}}
    drv = SimForcePlateDriver("plate", opts, ctx)
    run = await run_station([drv], clock, T0_S + 8.0)
    blocks = run.blocks["plate.force"]
    counters = np.array([b.counter for b in blocks])
    back = np.flatnonzero(np.diff(counters) < 0)
    assert back.size == 1
    i = int(back[0]) + 1
    assert counters[i] == 0
    resets = [r for r in truth if r["type"] == "reset"]
    assert len(resets) == 1
    assert resets[0]["t_s"] == pytest.approx(T0_S + 4.0)
    assert blocks[i].arrival_s >= resets[0]["resume_t_s"]
    assert blocks[i - 1].arrival_s <= resets[0]["t_s"]
    loss = next(r for r in truth if r["type"] == "loss")
    assert loss["cause"] == "reset"
    assert loss["first_counter"] == blocks[i - 1].counter + blocks[i - 1].n_samples
    # lost = the unsent partial packet + the reboot (0.3 s at 1 kHz)
    assert 300 <= loss["n_samples"] < 300 + blocks[0].n_samples + 2
    # the plate is counter-only (timestamp_hz 0 by default)
    assert blocks[0].device_ticks is None


async def test_reset_restarts_device_ticks() -> None:
    ctx, clock, _ = make_ctx()
    opts = {
        "clock": {"offset_s": 10.0},
        "transport": {"kind": "ideal"},
        "faults": {"reset_after_s": 2.0},
    }
    drv = SimImuDriver("imu", opts, ctx)
    run = await run_station([drv], clock, T0_S + 4.0)
    blocks = run.blocks["imu.imu"]
    counters = np.array([b.counter for b in blocks])
    i = int(np.flatnonzero(np.diff(counters) < 0)[0]) + 1
    assert blocks[0].device_ticks == 10_000_000
    assert blocks[i].device_ticks == 0


def station(ctx: DriverContext, seed: int, order: int = 1) -> list[Any]:
    scen = {"seed": seed, "first_trial_s": 1.0, "trial_period_s": 4.0, "trial_jitter_s": 0.1}
    drivers = [
        SimPlatformDriver("platform", {"scenario": scen}, ctx),
        SimEmgDriver("emg", {"scenario": scen, "n_channels": 3}, ctx),
        SimForcePlateDriver("plate", {"scenario": scen}, ctx),
        SimImuDriver("imu", {"scenario": scen}, ctx),
    ]
    return drivers[::order]


async def run_once(seed: int, order: int = 1) -> tuple[dict[str, np.ndarray], list[Any]]:
    ctx, clock, truth = make_ctx()
    run = await run_station(station(ctx, seed, order), clock, T0_S + 6.0)
    data = {sid: stream_record(b, 16).data for sid, b in run.blocks.items()}
    return data, truth


async def test_same_seed_same_run_whatever_the_open_order() -> None:
    a, truth_a = await run_once(7)
    b, truth_b = await run_once(7)
    c, truth_c = await run_once(7, order=-1)
    d, _ = await run_once(8)
    assert set(a) == {"platform.trigger", "platform.imu", "emg.emg", "plate.force", "imu.imu"}
    for sid in a:
        np.testing.assert_array_equal(a[sid], b[sid])
        n = min(a[sid].shape[0], c[sid].shape[0])
        np.testing.assert_array_equal(a[sid][:n], c[sid][:n])
        assert not np.array_equal(a[sid][:100], d[sid][:100]) or sid == "platform.trigger"
    assert truth_a == truth_b
    key = lambda r: (r["type"], r.get("device_id", ""), r.get("trial", -1), r.get("channel", -1))  # noqa: E731
    assert sorted(truth_a, key=key) == sorted(truth_c, key=key)


async def test_realtime_mode_paces_in_real_time() -> None:
    clock = MonotonicClock()
    ctx = DriverContext(clock=clock, realtime=True)
    drv = SimPlatformDriver("platform", {"transport": {"kind": "serial"}}, ctx)
    lag_s: list[float] = []
    t_start = clock.now()
    wall0 = time.perf_counter()
    run = await run_station(
        [drv], clock, t_start + 0.4, on_block=lambda b: lag_s.append(clock.now() - b.arrival_s)
    )
    wall = time.perf_counter() - wall0
    assert 0.38 <= wall < 1.5
    n = sum(b.n_samples for b in run.blocks["platform.imu"])
    assert 350 <= n <= 420  # 1 kHz for 0.4 s
    assert min(lag_s) >= 0.0
    assert float(np.median(lag_s)) < 0.02


async def test_close_and_reopen_loses_what_was_sampled_meanwhile() -> None:
    ctx, clock, truth = make_ctx()
    drv = SimImuDriver("imu", {"transport": {"kind": "ideal"}}, ctx)
    await drv.open()
    got = []
    async for b in drv.blocks():
        got.append(b)
        if clock.now() > T0_S + 1.0:
            break
    await drv.close()
    await clock.sleep_until(T0_S + 1.7)  # e.g. the supervisor's silence watchdog
    await drv.open()
    async for b in drv.blocks():
        got.append(b)
        if clock.now() > T0_S + 2.5:
            break
    await drv.close()
    rec = stream_record(got, 16)
    sizes = np.array([b.n_samples for b in got])
    seen = counter_gaps(rec.block_first, sizes)
    assert seen == merged_losses(truth, "imu.imu")
    assert len(seen) == 1
    assert 680 <= seen[0][1] <= 710  # ~0.7 s at 1 kHz, packet-aligned


def faulty_station(ctx: DriverContext) -> list[Any]:
    """Every transport and fault the simulator has, on four devices sharing one scenario."""
    faults = {"drop_packet_prob": 0.02, "corrupt_packet_prob": 0.01}
    return [
        SimPlatformDriver(
            "platform",
            {"transport": {"kind": "serial", "packet_samples": 7}, "faults": faults},
            ctx,
        ),
        SimEmgDriver(
            "emg",
            {
                "n_channels": 4,
                "clock": {"drift_ppm": -100.0},
                "transport": {"kind": "ble", "ble_interval_ms": 30.0},
                "faults": {**faults, "disconnect_after_s": 2.0, "disconnect_duration_s": 0.7},
            },
            ctx,
        ),
        SimForcePlateDriver(
            "plate", {"transport": {"kind": "ideal"}, "faults": {"reset_after_s": 1.5}}, ctx
        ),
        SimImuDriver("imu", {"transport": {"kind": "serial"}, "faults": faults}, ctx),
    ]


async def test_stream_delivers_exactly_what_blocks_yields() -> None:
    """The daemon takes blocks from `stream()` (clock callbacks); tests and tools iterate
    `blocks()`. Same seed, same faults: the same blocks, arrivals, outages and truth."""
    runs = []
    for delivery in ("blocks", "stream"):
        ctx, clock, truth = make_ctx()
        run = await run_station(
            faulty_station(ctx), clock, T0_S + 6.0, reconnect_delay_s=0.3, delivery=delivery
        )
        runs.append((run, truth))
    (pulled, truth_pulled), (pushed, truth_pushed) = runs
    assert pushed.gone_s == pulled.gone_s
    assert len(pulled.gone_s["emg"]) == 2  # the outages happened
    assert pushed.reopen_failures == pulled.reopen_failures
    assert sorted(pushed.blocks) == sorted(pulled.blocks)
    for sid, blocks in pulled.blocks.items():
        other = pushed.blocks[sid]
        assert [(b.counter, b.arrival_s, b.device_ticks) for b in other] == [
            (b.counter, b.arrival_s, b.device_ticks) for b in blocks
        ], sid
        np.testing.assert_array_equal(
            np.concatenate([b.data for b in other]), np.concatenate([b.data for b in blocks])
        )
    assert truth_pushed == truth_pulled
    assert {r["type"] for r in truth_pulled} >= {"loss", "outage", "reset"}


async def test_stream_raises_what_on_block_raises_and_stops_delivering() -> None:
    ctx, clock, _ = make_ctx()
    drv = SimImuDriver("imu", {"transport": {"kind": "serial"}}, ctx)
    await drv.open()
    seen: list[int] = []

    def on_block(block: Any) -> None:
        seen.append(block.counter)
        if len(seen) == 3:
            raise ZeroDivisionError("a bug downstream")

    with pytest.raises(ZeroDivisionError):
        await drv.stream(on_block)
    t_end = clock.now()
    await clock.sleep_until(t_end + 1.0)  # no timer left behind: nothing more arrives
    assert len(seen) == 3
    await drv.close()


async def test_stream_returns_once_the_driver_is_closed() -> None:
    ctx, clock, _ = make_ctx()
    drv = SimImuDriver("imu", {"transport": {"kind": "serial"}}, ctx)
    await drv.open()
    seen: list[float] = []
    streaming = asyncio.create_task(drv.stream(lambda b: seen.append(b.arrival_s)))
    await clock.sleep_until(T0_S + 0.5)
    await drv.close()
    await asyncio.wait_for(streaming, 1.0)  # at the next delivery event
    assert seen
    assert max(seen) <= T0_S + 0.5 + 0.02
    with pytest.raises(DeviceGoneError, match="before open"):
        await drv.stream(seen.append)


class NoTimerClock:
    """A host clock without `call_at` (as the tests' fakes): `stream()` paces a task."""

    def __init__(self, inner: VirtualClock) -> None:
        self._inner = inner

    def now(self) -> float:
        return self._inner.now()

    async def sleep_until(self, t_s: float) -> None:
        await self._inner.sleep_until(t_s)


async def test_stream_on_a_clock_without_timers_iterates_blocks() -> None:
    got = {}
    for delivery in ("blocks", "stream"):
        inner = VirtualClock(T0_S)
        clock = NoTimerClock(inner)
        ctx = DriverContext(clock=clock, realtime=False)
        drv = SimImuDriver("imu", {"transport": {"kind": "serial"}}, ctx)
        run = await run_station([drv], clock, T0_S + 2.0, delivery=delivery)
        got[delivery] = [(b.counter, b.arrival_s) for b in run.blocks["imu.imu"]]
    assert len(got["blocks"]) > 100
    assert got["stream"] == got["blocks"]
