"""The connection-event grid of a sparse BLE link and the bracket it gives (issue #7).

A Polar H10 over 30 ms connection events sends one frame per 0.18-0.56 s: the arrival
envelope alone converges over the 22 s the ECG frames take to visit their 39 phases. The
events themselves sit on a grid the host sees through every arrival; once it is inferred,
each frame lies in the interval before the event that carried it, whatever the host path
did, and the intersection of these brackets pins the map much sooner. These tests check the
grid inference against a plain numpy reference, that it finds nothing where there is no
grid, and the model on simulated H10 frames: more accurate than the envelope alone, and
back to it when the device does not send at the first event after a frame is complete.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from nmcore._clock_kernels import event_grid
from nmcore.clock import ClockModel

FloatArray = npt.NDArray[np.float64]

STEP_S = 0.00125


def numpy_event_grid(a: FloatArray, k_lo: int, k_hi: int, frac_min: float) -> tuple[float, float]:
    """The interval and the cluster's edge without a slide (slide_max = 0), brute force:
    every residue tried as the start of the window, the lowest of the fullest wins."""
    for k in range(k_hi, k_lo - 1, -1):
        iv = k * STEP_S
        res = np.sort(np.mod(a - a[0], iv))
        counts = np.array([np.sum(np.mod(res - r0, iv) <= 0.25 * iv) for r0 in res])
        best = int(np.argmax(counts))
        if counts[best] >= frac_min * a.shape[0]:
            return iv, float(res[best])
    return math.nan, math.nan


def grid_arrivals(
    rng: np.random.Generator, n: int, iv: float, phase: float, slide: float = 0.0
) -> FloatArray:
    """Batch arrivals at random events of a grid (radio clock `slide` off the host's), one
    in four events carrying something: a fixed 0.8 ms host path, exponential jitter (1 ms
    mean, less on short intervals), and 5% host stalls of up to an interval."""
    events = np.sort(rng.choice(np.arange(4 * n), size=n, replace=False))
    t = 500.0 + phase + events * iv * (1.0 + slide)
    lat = 0.0008 + rng.exponential(min(0.001, iv / 20.0), n)
    lat += (rng.random(n) < 0.05) * rng.uniform(0.0, iv, n)
    return np.sort(t + lat)


def run_grid(a: FloatArray, k_hi: int, slide_max: float) -> tuple[bool, FloatArray]:
    cap = a.shape[0] + 3
    ring = np.zeros(cap)
    start = 2
    for i, x in enumerate(a):
        ring[(start + i) % cap] = x
    out = np.full(2, np.nan)
    ok = event_grid(ring, start, a.shape[0], STEP_S, 6, k_hi, 0.9, slide_max, np.zeros(cap), out)
    out2 = np.full(2, np.nan)
    ok2 = event_grid.py_func(
        ring, start, a.shape[0], STEP_S, 6, k_hi, 0.9, slide_max, np.zeros(cap), out2
    )
    assert ok == ok2
    np.testing.assert_allclose(out, out2, rtol=0, atol=1e-12)
    return bool(ok), out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("iv_ms", [7.5, 30.0, 50.0])
def test_event_grid_matches_numpy_reference(seed: int, iv_ms: float) -> None:
    rng = np.random.default_rng(seed)
    iv = iv_ms * 1e-3
    a = grid_arrivals(rng, 120, iv, float(rng.uniform(0, iv)))
    k_hi = round(iv / STEP_S) + 4  # candidates above the interval too: they must not cluster
    ok, out = run_grid(a, k_hi, 0.0)
    ref_iv, ref_p = numpy_event_grid(a, 6, k_hi, 0.9)
    assert ok
    assert out[0] == pytest.approx(ref_iv, abs=1e-12)
    assert out[0] == pytest.approx(iv, abs=1e-12)
    assert out[1] == pytest.approx(ref_p, abs=1e-9)


def test_event_grid_follows_the_radio_clock_slide() -> None:
    rng = np.random.default_rng(11)
    iv, slide = 0.030, 80e-6
    a = grid_arrivals(rng, 200, iv, 0.004, slide)
    ok, out = run_grid(a, 26, 200e-6)
    assert ok
    assert out[0] == pytest.approx(iv * (1 + slide), rel=10e-6)
    # every arrival is at or after its event, which is within a few jitters of it
    ev = a[0] + out[1] + np.floor((a - a[0] - out[1] + 1e-9) / out[0]) * out[0]
    on = (a - ev) < 0.25 * iv
    assert np.mean(on) > 0.9
    assert np.min((a - ev)[on]) > -1e-6
    assert np.median((a - ev)[on]) < 0.0015


@pytest.mark.parametrize("kind", ["poisson", "usb_1ms"])
def test_event_grid_finds_nothing_without_a_grid(kind: str) -> None:
    rng = np.random.default_rng(3)
    if kind == "poisson":
        a = 100.0 + np.cumsum(rng.exponential(0.03, 200))
    else:  # packets read on a 1 ms USB frame grid at random frames
        a = 100.0 + np.sort(rng.choice(np.arange(6000), 200, replace=False)) * 0.001
    ok, _ = run_grid(a, 40, 200e-6)
    assert not ok


# -- the model on simulated H10 frames ----------------------------------------------------

STREAMS = ((130, 73), (200, 36))  # (rate_hz, samples per frame): ECG, ACC
LAT_MIN_S = 0.0008


def simulate_h10(
    seed: int, *, drift_ppm: float, duration_s: float = 40.0, late_share: float = 0.0
) -> list[tuple[float, float, FloatArray]]:
    """(device time of the last sample, arrival, true host times) per frame, in arrival
    order. A frame leaves at the first 30 ms event after its last sample; with
    `late_share`, that share of frames is held back 1-3 events (a buffering device)."""
    rng = np.random.default_rng(seed)
    drift = drift_ppm * 1e-6
    iv = 0.030
    t0 = float(rng.uniform(100.0, 1000.0))
    phase = float(rng.uniform(0.0, iv))
    pending = []
    for rate, per in STREAMS:
        start = float(rng.uniform(0.0, 1.0))
        k0 = math.ceil(start * (1.0 + drift) * rate)
        for f in range(int((duration_s - start) * rate / per)):
            dev = (k0 + f * per + np.arange(per)) / rate
            true = t0 + dev / (1.0 + drift)
            event = math.ceil((true[-1] - t0 - phase) / iv)
            if rng.random() < late_share:
                event += int(rng.integers(1, 4))
            pending.append((event, float(dev[-1]), true))
    pending.sort(key=lambda p: (p[0], p[2][-1]))
    latency = {
        e: LAT_MIN_S + rng.exponential(0.0009) + rng.uniform(0.002, 0.005) * (rng.random() < 0.03)
        for e in sorted({p[0] for p in pending})
    }
    frames = []
    last = -math.inf
    for event, last_dev, true in pending:
        last = max(t0 + phase + event * iv + latency[event], last)
        frames.append((last_dev, last, true))
    return frames


def stamp_errors(
    frames: list[tuple[float, float, FloatArray]], model: ClockModel, settle_s: float = 10.0
) -> FloatArray:
    t_start = frames[0][1]
    errs = []
    for last_dev, arrival, true in frames:
        model.observe(last_dev, arrival)
        per = true.shape[0]
        rate = STREAMS[0][0] if per == STREAMS[0][1] else STREAMS[1][0]
        host = model.to_host_array(last_dev - (per - 1 - np.arange(per)) / rate)
        if arrival - t_start >= settle_s:
            errs.append((host - true) * 1e3)
    return np.concatenate(errs)


class EnvelopeOnly(ClockModel):
    """The same model with the grid never found: the behaviour before the grid."""

    def _detect_grid(self) -> None:
        self._grid_iv = math.nan


@pytest.mark.parametrize("drift_ppm", [100.0, -50.0])
def test_grid_bracket_beats_the_envelope_on_sparse_frames(drift_ppm: float) -> None:
    """12 simulated 40 s runs: p99 error after 10 s, mean over runs, 4.4 -> 2.9 ms at
    100 ppm and 3.3 -> 2.0 ms at -50 ppm (worst run 5.5 -> 3.9 and 7.3 -> 6.4 ms; the
    0.8 ms fixed latency included); never a restart."""
    new, old = [], []
    for seed in range(12):
        model = ClockModel(window_s=60.0)
        err = stamp_errors(simulate_h10(seed, drift_ppm=drift_ppm), model)
        assert model.discontinuities == 0
        new.append(float(np.percentile(np.abs(err), 99)))
        ref = EnvelopeOnly(window_s=60.0)
        old.append(
            float(
                np.percentile(
                    np.abs(stamp_errors(simulate_h10(seed, drift_ppm=drift_ppm), ref)), 99
                )
            )
        )
    assert float(np.mean(new)) < 0.7 * float(np.mean(old))
    assert float(np.mean(new)) <= 3.2
    assert max(new) <= max(old)


def test_grid_bracket_steps_aside_for_a_buffering_device() -> None:
    """A device that holds 30% of its frames back 1-3 events breaks the assumption: the
    lower bounds of those frames are too high, the sides cross or the bracket collapses,
    and the model must be no worse than the envelope alone (measured, 12 runs: the same
    p99, 7.1 ms on average: the grid bracket steps aside)."""
    new, old = [], []
    for seed in range(6):
        frames = simulate_h10(seed, drift_ppm=100.0, late_share=0.3)
        model = ClockModel(window_s=60.0)
        new.append(float(np.percentile(np.abs(stamp_errors(frames, model)), 99)))
        ref = EnvelopeOnly(window_s=60.0)
        old.append(float(np.percentile(np.abs(stamp_errors(frames, ref)), 99)))
    assert float(np.mean(new)) <= float(np.mean(old)) + 0.5
