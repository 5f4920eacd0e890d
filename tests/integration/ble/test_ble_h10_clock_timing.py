"""Sample times of an emulated Polar H10 through real bleak and the fake BlueZ, mapped by
one ClockModel for the device the way the runtime's pipeline does it, against the
emulator's truth. The slower, fuller figures are in benchmarks/bench_ble.py.

What no model fed arrivals alone can beat is the observable floor: for each sample, the
lowest (arrival - true time of the frame's last sample) over the frames so far. The test
holds the model near it after 10 s, and checks that the phase-locked ACC frames (36
samples = six 30 ms connection events, 25-30 ms late for minutes in some runs) no longer
restart the fit (they did: a 14 ms p99 in one run of four). The margins are wide: the
real path is noisy and one run in several still loses up to ~5 ms to a young slope.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from nmcore.clock import ClockModel, TickUnwrapper

from .conftest import fakebluez

STREAM_S = 22.0
SETTLE_S = 10.0
RATES = {"h10.ecg": 130, "h10.acc": 200}
MEAS = {"h10.ecg": 0, "h10.acc": 2}


@pytest.mark.slow
async def test_h10_sample_times_near_the_observable_floor(fake_bluez: Any) -> None:
    h10, blocks = await fakebluez.stream_h10_blocks(fake_bluez, STREAM_S)
    model = ClockModel(window_s=60.0, nominal_rate_hz=130.0)
    unwrap = TickUnwrapper(64, 1e9)  # one device clock, shared by both streams
    first = {sid: next(b for b in blocks if b.stream_id == sid) for sid in RATES}
    k0 = {sid: h10.truth[MEAS[sid]].delivered[0][0] for sid in RATES}
    t_start = blocks[0].arrival_s
    floor_s = np.inf
    err_ms: list[float] = []
    floor_ms: list[float] = []
    for b in blocks:
        sid = b.stream_id
        rate = RATES[sid]
        n = b.n_samples
        assert b.device_ticks is not None
        dev_t = unwrap.seconds(b.device_ticks) - (n - 1 - np.arange(n)) / rate
        model.observe(float(dev_t[-1]), b.arrival_s)
        host_t = model.to_host_array(dev_t)
        k = k0[sid] + (b.counter - first[sid].counter) + np.arange(n, dtype=np.int64)
        true_t = h10.host_time_s(k, rate)
        floor_s = min(floor_s, b.arrival_s - float(true_t[-1]))
        if b.arrival_s - t_start >= SETTLE_S:
            err_ms.extend(((host_t - true_t) * 1e3).tolist())
            floor_ms.extend([floor_s * 1e3] * n)
    err = np.asarray(err_ms)
    p99 = float(np.percentile(np.abs(err), 99))
    floor_p99 = float(np.percentile(floor_ms, 99))
    seen = (
        f"p99 {p99:.2f} ms, floor p99 {floor_p99:.2f} ms, median {np.median(err):.2f} ms, "
        f"min {np.min(err):.2f} ms, drift {model.drift_ppm:.1f} ppm, "
        f"discontinuities {model.discontinuities}"
    )
    assert err.shape[0] > 1500
    assert model.discontinuities == 0, seen
    # late by the unobservable host latency on the whole, never much early
    assert float(np.median(err)) > 0.0, seen
    assert float(np.min(err)) > -3.0, seen
    # within 0.3-1.5 ms of the floor in 6 bench runs of 7; 4.6 ms in the 7th, where the
    # ACC phase wrapped and the young slope ran to the drift limit (see the report)
    assert p99 <= floor_p99 + 5.0, seen
