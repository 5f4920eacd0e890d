"""Accuracy regression of the default method's onset refinement at 10 dB (issue #4): a few
dozen seeded synthetic trials laid out as in benchmarks/bench_onset_accuracy.py (2 kHz,
stimulus at 0.5 s, 500 ms rest and response windows, onset 50-350 ms after the stimulus),
seeds other than the benchmark's. The bounds sit between the two look-backs' expected MAE
(measured on 800 other trials per cell): 1.0.0 (ML step, then a gated ramp ML) step
2.1 ms / ramp 15.9 ms; 1.1.0 (whitened step-or-ramp posterior median) 0.9 / 10.8 ms; on
these seeds 1.0.0 gives 1.44 / 16.9 ms and fails both, 1.1.0 0.55 / 11.2 ms."""

from __future__ import annotations

import numpy as np
import pytest

from nmcore.detect.emg import OnsetParams, emg_onsets
from nmcore.sim.emg import synth_emg_trial

RATE_HZ = 2000.0
STIM = 1000
MISS_MS = 50.0  # as the benchmark: a detection further from the truth is a miss


def _errors_ms(shape: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    params = OnsetParams(rest_window_ms=500.0, response_window_ms=500.0)
    errs = []
    for _ in range(n):
        onset_s = 0.55 + rng.uniform(0.0, 0.3)
        x = synth_emg_trial(
            rng,
            rate_hz=RATE_HZ,
            duration_s=1.5,
            onset_s=onset_s,
            snr_db=10.0,
            shape=shape,  # type: ignore[arg-type]
        )
        r = emg_onsets(x, RATE_HZ, STIM, params)[0]
        truth = round(onset_s * RATE_HZ)
        errs.append(np.inf if r.onset_index is None else (r.onset_index - truth) / RATE_HZ * 1e3)
    return np.asarray(errs)


@pytest.mark.parametrize(
    ("shape", "n", "seed", "mae_max_ms", "median_max_ms"),
    [
        ("step", 60, 404, 1.0, 1.0),  # goal 2 ms
        ("ramp", 40, 405, 13.0, 12.5),  # goal 15 ms
    ],
)
def test_mae_at_10_db_beats_the_old_look_back(
    shape: str, n: int, seed: int, mae_max_ms: float, median_max_ms: float
) -> None:
    errs = _errors_ms(shape, n, seed)
    found = np.abs(errs) <= MISS_MS
    assert found.sum() >= n - 1  # goal: misses <= 1 %
    mae = float(np.mean(np.abs(errs[found])))
    assert mae <= mae_max_ms, mae
    assert float(np.median(np.abs(errs[found]))) <= median_max_ms
    assert not np.any(errs < -MISS_MS)  # nothing far before the truth
