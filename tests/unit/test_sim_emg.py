"""The synthetic EMG keeps its promises: SNR, spectra, onset shapes, continuity across calls."""

from __future__ import annotations

import numpy as np
import pytest

from nmcore.sim.emg import EmgGenerator, synth_emg_trial


def _band_fraction(x: np.ndarray, rate_hz: float, lo_hz: float, hi_hz: float) -> float:
    spec = np.abs(np.fft.rfft(x - x.mean())) ** 2
    f = np.fft.rfftfreq(len(x), 1.0 / rate_hz)
    return float(spec[(f >= lo_hz) & (f <= hi_hz)].sum() / spec.sum())


@pytest.mark.parametrize("rate_hz", [1000.0, 2000.0, 4000.0])
def test_background_rms_and_burst_snr_as_promised(rate_hz: float) -> None:
    noise_uv = 5.0
    gen = EmgGenerator(rate_hz=rate_hz, n_channels=2, rng=np.random.default_rng(1))
    n = int(20 * rate_hz)
    snr_db = 6.0
    gen.schedule_burst(1, n // 2, n // 2, snr_db)
    x = gen.generate(n)
    rest_rms = np.sqrt(np.mean(x[: n // 2] ** 2, axis=0))
    np.testing.assert_allclose(rest_rms, noise_uv, rtol=0.03)
    # burst alone: total power minus background power (independent components add)
    burst_power = np.mean(x[n // 2 :, 1] ** 2) - np.mean(x[n // 2 :, 0] ** 2)
    measured_db = 10 * np.log10(burst_power / noise_uv**2)
    assert measured_db == pytest.approx(snr_db, abs=0.3)


def test_burst_is_band_limited_and_background_partly_broadband() -> None:
    rate_hz = 4000.0
    gen = EmgGenerator(rate_hz=rate_hz, n_channels=1, rng=np.random.default_rng(2))
    n = int(10 * rate_hz)
    gen.schedule_burst(0, n, n, 30.0)  # 30 dB: the burst dominates
    rest = gen.generate(n)[:, 0]
    burst = gen.generate(n)[:, 0]
    # 4th-order Butterworth with -3 dB edges at 20 and 450 Hz: ~90 % inside, ~99 % an octave out
    assert _band_fraction(burst, rate_hz, 20.0, 450.0) > 0.85
    assert _band_fraction(burst, rate_hz, 10.0, 900.0) > 0.99
    assert _band_fraction(burst, rate_hz, 0.0, 10.0) < 0.01
    # background: half band-limited, half white up to 500 Hz -> some power in 450-500 Hz and
    # below 20 Hz, but nothing much above the 500 Hz anti-alias edge
    assert 0.7 < _band_fraction(rest, rate_hz, 20.0, 450.0) < 0.95
    assert _band_fraction(rest, rate_hz, 700.0, 2000.0) < 0.02


def test_mains_and_ecg_contamination_spectra() -> None:
    rate_hz = 2000.0
    gen = EmgGenerator(
        rate_hz=rate_hz,
        n_channels=1,
        rng=np.random.default_rng(3),
        noise_rms_uv=1.0,
        mains_hz=60.0,
        mains_uv=20.0,
    )
    x = gen.generate(int(10 * rate_hz))[:, 0]
    for harmonic in (60.0, 180.0, 300.0):
        assert _band_fraction(x, rate_hz, harmonic - 1, harmonic + 1) > 0.005
    assert _band_fraction(x, rate_hz, 59.0, 61.0) > 0.8
    gen = EmgGenerator(
        rate_hz=rate_hz, n_channels=1, rng=np.random.default_rng(4), noise_rms_uv=1.0, ecg_uv=50.0
    )
    x = gen.generate(int(20 * rate_hz))[:, 0]
    # ~1 Hz beats: 18-22 complexes of ~50 µV peak in 20 s; most energy below 40 Hz
    peaks = np.nonzero((x[1:-1] > 30) & (x[1:-1] >= x[:-2]) & (x[1:-1] > x[2:]))[0]
    beats = np.count_nonzero(np.diff(peaks) > 0.5 * rate_hz) + 1
    assert 17 <= beats <= 23
    assert _band_fraction(x, rate_hz, 0.0, 40.0) > 0.8


def test_step_and_ramp_onset_shapes() -> None:
    rate_hz = 2000.0
    gen = EmgGenerator(rate_hz=rate_hz, n_channels=2, rng=np.random.default_rng(5))
    onset, dur = 4000, 4000
    gen.schedule_burst(0, onset, dur, 40.0, "step")
    gen.schedule_burst(1, onset, dur, 40.0, "ramp", ramp_ms=50.0)
    x = gen.generate(10_000)
    ramp = round(0.05 * rate_hz)
    # 40 dB above a 5 µV background: the signal right before the onset is background only
    assert np.sqrt(np.mean(x[onset - 200 : onset] ** 2)) < 7.0
    step_rms = np.sqrt(np.mean(x[onset : onset + 50, 0] ** 2))
    assert step_rms > 200.0
    # the ramp's first fifth has ~ (1/5 .. ) of the amplitude: far below the plateau
    early = np.sqrt(np.mean(x[onset : onset + ramp // 5, 1] ** 2))
    late = np.sqrt(np.mean(x[onset + ramp : onset + 5 * ramp, 1] ** 2))
    assert early < 0.25 * late
    assert late == pytest.approx(500.0, rel=0.1)
    # offset: back to background after the duration
    assert np.sqrt(np.mean(x[onset + dur + 100 :, 0] ** 2)) < 7.0


def test_generate_is_continuous_across_calls() -> None:
    kw = {"rate_hz": 2000.0, "n_channels": 3, "mains_uv": 3.0, "ecg_uv": 20.0, "tonic_rms_uv": 2}
    a = EmgGenerator(rng=np.random.default_rng(9), **kw)  # type: ignore[arg-type]
    b = EmgGenerator(rng=np.random.default_rng(9), **kw)  # type: ignore[arg-type]
    for g in (a, b):
        g.schedule_burst(1, 1500, 900, 10.0, "ramp")
    whole = a.generate(5000)
    parts = np.vstack([b.generate(n) for n in (1, 31, 968, 1000, 3000)])
    np.testing.assert_allclose(parts, whole, rtol=0, atol=1e-9)
    assert a.position == 5000


def test_synth_trial_noise_only_and_validation() -> None:
    rng = np.random.default_rng(11)
    x = synth_emg_trial(rng, rate_hz=1000.0, duration_s=2.0, onset_s=None, snr_db=20.0)
    assert x.shape == (2000, 1)
    assert np.sqrt(np.mean(x**2)) == pytest.approx(5.0, rel=0.1)
    with pytest.raises(ValueError, match="channel"):
        EmgGenerator(rate_hz=1000.0, n_channels=1, rng=rng).schedule_burst(2, 0, 10, 5.0)
    with pytest.raises(ValueError, match="shape"):
        EmgGenerator(rate_hz=1000.0, n_channels=1, rng=rng).schedule_burst(
            0,
            0,
            10,
            5.0,
            "square",  # type: ignore[arg-type]
        )
