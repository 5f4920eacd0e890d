"""Clock model on sparse long frames: a Polar H10 through 30 ms BLE connection events.

No D-Bus here: the frame timing of tests/fakebluez/polar.py is replayed directly. The H10
sends ECG at 130 Hz in 73-sample frames (one per 0.56 s) and ACC at 200 Hz in 36-sample
frames (0.18 s = exactly six 30 ms events, so the ACC phase is locked and slides only with
the drift); each frame's timestamp belongs to its last sample, and a frame leaves at the
first connection event after that sample. The host path adds a fixed minimum latency plus
a variable part (the fake BlueZ measured 0.84 ms min, 1.7 ms median, 6 ms p99).

What the model can know from arrivals alone: for each frame, arrival minus the fixed minimum
latency minus the sample time is its phase to the next event plus host jitter, and no
arrival-only estimator beats the lowest such excess seen so far (`stamp` returns it). On
these links that floor stays 1-3 ms up for the first minute (see nmcore.clock, "What cannot
be observed"), so the tests check what the fix is about: the discontinuity rules no longer
take the phase-locked ACC frames (25-30 ms late for minutes) for clock steps, a frame near
the floor is no longer dropped as corrupt, the young slope no longer runs away, real steps
are still caught, and the minimum latency is never silently taken off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from nmcore._clock_kernels import group_minima, local_floor, minima_slope, shrink_slope
from nmcore.clock import ClockModel

FloatArray = npt.NDArray[np.float64]

STREAMS = ((130, 73), (200, 36))  # (rate_hz, samples per frame): ECG, ACC at MTU 232
SETTLE_S = 10.0
LAT_MIN_S = 0.0008


@dataclass
class Frame:
    stream: int
    last_dev_s: float  # device time of the frame's last sample
    arrival_s: float
    true_s: FloatArray  # host time at which each sample was taken


def simulate_h10(
    seed: int,
    *,
    duration_s: float = 40.0,
    drift_ppm: float = 100.0,
    interval_s: float = 0.030,
    step_back_s: float = 0.0,
    step_at_s: float = math.inf,
) -> list[Frame]:
    """Frames in arrival order. The device clock runs `drift_ppm` fast; from `step_at_s`
    (host seconds after start) its time reads `step_back_s` less."""
    rng = np.random.default_rng(seed)
    drift = drift_ppm * 1e-6
    t0 = float(rng.uniform(100.0, 1000.0))
    phase = float(rng.uniform(0.0, interval_s))
    pending: list[tuple[int, int, float, FloatArray]] = []
    for si, (rate, per) in enumerate(STREAMS):
        start = float(rng.uniform(0.0, 1.0))
        k0 = math.ceil(start * (1.0 + drift) * rate)
        for f in range(int((duration_s - start) * rate / per)):
            dev = (k0 + f * per + np.arange(per)) / rate
            true = t0 + dev / (1.0 + drift)
            if true[-1] - t0 >= step_at_s:
                dev = dev - step_back_s
            event = math.ceil((true[-1] - t0 - phase) / interval_s)
            pending.append((event, si, float(dev[-1]), true))
    pending.sort(key=lambda p: (p[0], p[3][-1]))
    latency = {
        e: LAT_MIN_S + rng.exponential(0.0009) + (rng.uniform(0.002, 0.005) * (rng.random() < 0.03))
        for e in sorted({p[0] for p in pending})
    }
    frames = []
    last = -math.inf
    for event, si, last_dev, true in pending:
        last = max(t0 + phase + event * interval_s + latency[event], last)
        frames.append(Frame(si, last_dev, last, true))
    return frames


def stamp(frames: list[Frame], model: ClockModel) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Run the model as the runtime does (observe, then map the frame's samples). Returns
    the error (ms) of every sample after SETTLE_S, the oracle floor (ms) at that sample's
    frame, and the arrival time (s after start) of each sample's frame."""
    t_start = frames[0].arrival_s
    floor = math.inf
    errs, floors, at = [], [], []
    for f in frames:
        rate, per = STREAMS[f.stream]
        floor = min(floor, f.arrival_s - f.true_s[-1] - LAT_MIN_S)
        model.observe(f.last_dev_s, f.arrival_s)
        dev = f.last_dev_s - (per - 1 - np.arange(per)) / rate
        host = model.to_host_array(dev)
        if f.arrival_s - t_start >= SETTLE_S:
            errs.append((host - f.true_s) * 1e3)
            floors.append(np.full(per, floor * 1e3))
            at.append(np.full(per, f.arrival_s - t_start))
    return np.concatenate(errs), np.concatenate(floors), np.concatenate(at)


@pytest.mark.parametrize("drift_ppm", [100.0, -50.0])
def test_sparse_h10_frames_neither_restart_nor_run_away(drift_ppm: float) -> None:
    """24 simulated minutes of H10 streaming. Before the fix the fit restarted in 12-18 of
    the 24 runs (phase-locked ACC frames taken for a clock step back, lone ECG frames near
    the floor dropped as corrupt, young slopes at the 300 ppm limit), p99 error 7.7-8.6 ms
    on average and 17 ms at worst; now no restart, 3.4-4.5 ms on average, 6 ms at worst.
    The floor the arrivals reveal in the first minute is still a few ms above the truth
    (see nmcore.clock, "What cannot be observed"), so the bounds are those figures with a
    margin, not 1 ms."""
    p99s, restarts, medians = [], 0, []
    for seed in range(24):
        model = ClockModel(window_s=60.0)
        err_ms, _, _ = stamp(simulate_h10(seed, duration_s=60.0, drift_ppm=drift_ppm), model)
        p99s.append(float(np.percentile(np.abs(err_ms), 99)))
        medians.append(float(np.median(err_ms)))
        restarts += model.stats(0.0).discontinuities
    assert restarts <= 1
    assert float(np.mean(p99s)) <= 5.0
    assert float(np.median(p99s)) <= 5.0
    assert max(p99s) <= 8.0
    # never claims to see the minimum latency: late by it on the whole, not early
    assert float(np.median(medians)) >= LAT_MIN_S * 1e3 - 0.3


@pytest.mark.parametrize("seed", range(3))
def test_sparse_h10_step_back_is_still_caught(seed: int) -> None:
    """A 60 ms device clock step back (over the stall tolerance) is still confirmed on a
    sparse link, within a few seconds (the hold stretches with the link's gaps between
    packets near the floor: here 1.5-4.8 s instead of 2 s). It may count twice when the
    run that confirms it began on phase-locked frames before the step."""
    frames = simulate_h10(seed, duration_s=70.0, step_back_s=0.060, step_at_s=40.0)
    model = ClockModel(window_s=60.0)
    t_start = frames[0].arrival_s
    found_at = math.nan
    for f in frames:
        model.observe(f.last_dev_s, f.arrival_s)
        if model.discontinuities and found_at != found_at:
            found_at = f.arrival_s - t_start
    assert 1 <= model.discontinuities <= 2
    assert 40.0 < found_at <= 46.0
    last = frames[-1]
    err_ms = (model.to_host(last.last_dev_s) - last.true_s[-1]) * 1e3
    assert abs(err_ms) <= 6.0


def test_a_lone_early_frame_in_order_is_the_floor_not_a_corrupt_timestamp() -> None:
    """ACC-like frames 25 ms late set the first line; one frame 12 ms under it, in order
    with its neighbours, lowers the map at once (it used to be dropped as corrupt); one
    1234 s ahead is still ignored."""
    model = ClockModel(window_s=60.0)
    for i in range(40):  # 7.2 s of frames 25 ms late
        model.observe(0.18 * i, 10.0 + 0.18 * i + 0.025)
    model.observe(7.25, 10.0 + 7.25 + 0.013)  # 12 ms under the line
    model.observe(7.2 + 1234.5, 10.0 + 7.26 + 0.025)  # garbage
    model.observe(7.38, 10.0 + 7.38 + 0.025)
    assert model.to_host(7.38) == pytest.approx(10.0 + 7.38 + 0.013, abs=0.5e-3)
    assert model.discontinuities == 0


# -- kernels -------------------------------------------------------------------------------


def _ring(rng: np.random.Generator, cap: int, n: int, start: int) -> tuple[FloatArray, FloatArray]:
    u = np.zeros(cap)
    v = np.zeros(cap)
    uu = np.sort(rng.uniform(0.0, 30.0, n))
    vv = 1e-3 * rng.exponential(1.0, n) - 80e-6 * uu
    vv[rng.random(n) < 0.4] += 0.027  # phase-locked frames far above the floor
    idx = (start + np.arange(n)) % cap
    u[idx] = uu
    v[idx] = vv
    return u, v


@pytest.mark.parametrize("impl", ["jit", "py"])
@pytest.mark.parametrize("seed", range(4))
def test_local_floor_matches_numpy(seed: int, impl: str) -> None:
    rng = np.random.default_rng(seed)
    cap, n, start = 64, 50, 40  # wraps around the ring
    u, v = _ring(rng, cap, n, start)
    fn = local_floor if impl == "jit" else local_floor.py_func
    idx = (start + np.arange(n)) % cap
    d = -90e-6
    for lo, hi in ((5.0, 12.0), (0.0, 30.0), (29.9, 40.0), (50.0, 60.0)):
        sel = (u[idx] >= lo) & (u[idx] < hi)
        want = float(np.min(v[idx][sel] - d * u[idx][sel])) if sel.any() else math.inf
        assert fn(u, v, start, n, d, lo, hi) == pytest.approx(want, abs=1e-15)


@pytest.mark.parametrize("impl", ["jit", "py"])
@pytest.mark.parametrize("seed", range(4))
def test_group_minima_matches_numpy(seed: int, impl: str) -> None:
    rng = np.random.default_rng(20 + seed)
    cap, n, start = 64, 50, 40
    u, v = _ring(rng, cap, n, start)
    idx = (start + np.arange(n)) % cap
    fn = group_minima if impl == "jit" else group_minima.py_func
    d = -90e-6
    for group_s in (0.5, 2.0, 7.5, 100.0):
        gu = np.full(cap, np.nan)
        gv = np.full(cap, np.nan)
        m = fn(u, v, start, n, d, group_s, gu, gv)
        uu, vv = u[idx], v[idx]
        g = np.floor(uu / group_s)
        want = [int(np.flatnonzero(g == x)[np.argmin((vv - d * uu)[g == x])]) for x in np.unique(g)]
        assert m == len(want)
        np.testing.assert_array_equal(gu[:m], uu[want])
        np.testing.assert_array_equal(gv[:m], vv[want])
        assert np.all(np.isnan(gu[m:]))  # nothing written past the groups


def _numpy_shrink(u: FloatArray, resid: FloatArray, d: float, prior_sd: float) -> float:
    med = np.median(resid)
    keep = resid <= med + 3.0 * 1.4826 * np.median(np.abs(resid - med))
    uk = u[keep]
    se2 = np.sum(resid[keep] ** 2) / (keep.sum() - 2) / np.sum((uk - uk.mean()) ** 2)
    return float(d * prior_sd**2 / (prior_sd**2 + se2))


@pytest.mark.parametrize("impl", ["jit", "py"])
@pytest.mark.parametrize("seed", range(4))
def test_shrink_slope_matches_numpy(seed: int, impl: str) -> None:
    rng = np.random.default_rng(10 + seed)
    cap, n, start = 64, 50, 40
    u, v = _ring(rng, cap, n, start)
    work = np.zeros(cap)
    d = minima_slope(u, v, start, n, work)
    fn = shrink_slope if impl == "jit" else shrink_slope.py_func
    idx = (start + np.arange(n)) % cap
    want = _numpy_shrink(u[idx], work[:n].copy(), d, 100e-6)
    got = fn(u, start, n, work, d, 100e-6)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-15)
    assert abs(got) <= abs(d)
    # a tight line is hardly shrunk at all
    tight = np.zeros(cap)
    tight[idx] = -80e-6 * u[idx] + 1e-6 * rng.standard_normal(n)
    d_tight = minima_slope(u, tight, start, n, work)
    assert fn(u, start, n, work, d_tight, 100e-6) == pytest.approx(d_tight, rel=1e-3)


def test_a_drained_stall_stretches_the_stall_hold_only_for_a_while() -> None:
    """Dense packets: a 1.5 s transport stall is a gap with no packet near the floor, so
    right after it a step back needs 3 x 1.5 s to confirm; the gap decays with the device
    time passed (over window_s), and 70 s later the hold is back at `hold_s`."""

    def restart_delay_s(step_at_s: float) -> float:
        model = ClockModel()
        rng = np.random.default_rng(5)
        period_s = 0.01
        step_i = round(step_at_s / period_s)
        for i in range(round((step_at_s + 8.0) / period_s)):
            x = i * period_s - (0.06 if i >= step_i else 0.0)
            y = 2.0 + i * period_s + rng.exponential(1e-3)
            if 1000 <= i < 1150:  # 1.5 s stall at 10 s: queued, then drained at once
                y = 2.0 + 11.5 + 1e-4 * (i - 1000)
            model.observe(x, y)
            if model.discontinuities:
                return (i - step_i) * period_s
        return math.inf

    assert 4.0 <= restart_delay_s(15.0) <= 4.5  # 3 x 1.5 s, a little decayed
    assert 2.0 <= restart_delay_s(80.0) <= 2.2  # hold_s again
