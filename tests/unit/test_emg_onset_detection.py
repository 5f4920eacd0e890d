"""EMG onset detection: known onsets, invariance to unit and rate, silence on noise, streaming
equals offline, real recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest

from nmcore.detect.emg import (
    ALGORITHM_VERSION,
    EmgOnsetDetector,
    OnsetParams,
    emg_onsets,
    params_hash,
)
from nmcore.sim.emg import EmgGenerator, synth_emg_trial

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "emg"
METHODS = ["aglr", "cusum", "hodges_bui", "tkeo", "bonato"]


def _trials(
    rate_hz: float, n: int, snr_db: float, seed: int, shape: str = "step"
) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        onset_s = 0.6 + rng.uniform(0.0, 0.2)
        x = synth_emg_trial(
            rng,
            rate_hz=rate_hz,
            duration_s=1.3,
            onset_s=onset_s,
            snr_db=snr_db,
            shape=shape,  # type: ignore[arg-type]
        )
        out.append((x, round(onset_s * rate_hz)))
    return out


def _errors_ms(
    trials: list[tuple[np.ndarray, int]], rate_hz: float, params: OnsetParams
) -> list[float]:
    stim = round(0.5 * rate_hz)
    errs = []
    for x, truth in trials:
        r = emg_onsets(x, rate_hz, stim, params)[0]
        errs.append(np.inf if r.onset_index is None else (r.onset_index - truth) / rate_hz * 1e3)
    return errs


def test_default_recovers_known_step_onsets() -> None:
    errs = np.abs(_errors_ms(_trials(2000.0, 20, 10.0, seed=1), 2000.0, OnsetParams()))
    assert np.all(errs < 15.0), errs
    assert np.median(errs) <= 2.0


def test_default_recovers_ramp_onset_start_not_its_middle() -> None:
    errs = np.abs(
        _errors_ms(_trials(2000.0, 12, 20.0, seed=2, shape="ramp"), 2000.0, OnsetParams())
    )
    assert np.median(errs) <= 6.0, errs  # a step-only fit lands ~9 ms into a 50 ms ramp


@pytest.mark.parametrize("method", METHODS)
def test_every_method_finds_a_clear_onset(method: str) -> None:
    params = OnsetParams(method=method)  # type: ignore[arg-type]
    errs = np.abs(_errors_ms(_trials(2000.0, 6, 20.0, seed=3), 2000.0, params))
    assert np.all(errs < 15.0), errs


@pytest.mark.parametrize("method", METHODS)
def test_results_do_not_depend_on_the_unit(method: str) -> None:
    params = OnsetParams(method=method)  # type: ignore[arg-type]
    for x, _ in _trials(2000.0, 3, 6.0, seed=4):
        base = emg_onsets(x, 2000.0, 1000, params)[0]
        for scale in (1e-6, 4096.0):
            r = emg_onsets(x * scale, 2000.0, 1000, params)[0]
            assert (r.onset_index, r.alarm_index, r.offset_index) == (
                base.onset_index,
                base.alarm_index,
                base.offset_index,
            )
            if base.detected:
                assert r.peak == pytest.approx(base.peak * scale, rel=1e-9)  # type: ignore[operator]
                assert r.snr_db == pytest.approx(base.snr_db, abs=1e-9)


@pytest.mark.parametrize("rate_hz", [1000.0, 2000.0, 4000.0])
def test_same_parameters_hold_at_1_2_and_4_khz(rate_hz: float) -> None:
    errs = np.abs(_errors_ms(_trials(rate_hz, 10, 10.0, seed=5), rate_hz, OnsetParams()))
    assert np.all(errs < 15.0), errs
    assert np.median(errs) <= 3.0
    rng = np.random.default_rng(6)
    for _ in range(10):
        x = synth_emg_trial(rng, rate_hz=rate_hz, duration_s=1.1, onset_s=None, snr_db=0.0)
        assert not emg_onsets(x, rate_hz, round(0.5 * rate_hz))[0].detected


@pytest.mark.parametrize("method", METHODS)
def test_no_detection_on_noise_only_records(method: str) -> None:
    rng = np.random.default_rng(7)
    x = np.column_stack(
        [
            synth_emg_trial(rng, rate_hz=2000.0, duration_s=1.1, onset_s=None, snr_db=0.0)[:, 0]
            for _ in range(16)
        ]
    )
    res = emg_onsets(x, 2000.0, 1000, OnsetParams(method=method))  # type: ignore[arg-type]
    assert [r.channel for r in res if r.detected] == []
    assert all(r.onset_index is None and r.offset_index is None for r in res)


def test_mains_interference_and_tonic_activity_do_not_trigger() -> None:
    gen = EmgGenerator(
        rate_hz=2000.0,
        n_channels=4,
        rng=np.random.default_rng(8),
        mains_uv=20.0,
        tonic_rms_uv=3.0,
    )
    # 20 dB over the 5 µV noise; the 20 µV mains and 3 µV tonic are in band and in the rest
    gen.schedule_burst(3, 1400, 600, 20.0)
    res = emg_onsets(gen.generate(2400), 2000.0, 1000)
    assert [r.detected for r in res] == [False, False, False, True]
    assert abs(res[3].onset_index - 1400) <= 10  # type: ignore[operator]


def test_streaming_equals_offline_and_reports_alarm_then_onset() -> None:
    gen = EmgGenerator(rate_hz=2000.0, n_channels=16, rng=np.random.default_rng(9))
    truths = {c: 1300 + 20 * c for c in range(0, 16, 2)}
    for c, onset in truths.items():
        gen.schedule_burst(c, onset, 800, 10.0, "ramp" if c % 4 else "step")
    x = gen.generate(2400)
    offline = emg_onsets(x, 2000.0, 1000)
    det = EmgOnsetDetector(2000.0, 16)
    events = []
    for i in range(0, 1024, 32):
        events += det.process(x[i : i + 32])
    det.arm(1000)  # 24 samples late: the detector tests them on the next call
    for i in range(1024, 2400, 32):
        events += det.process(x[i : i + 32])
    streamed = det.results()
    assert streamed == offline
    kinds = {(e.kind, e.channel) for e in events}
    for c in range(16):
        if c in truths:
            assert ("alarm", c) in kinds
            assert ("onset", c) in kinds
            first_alarm = next(
                i for i, e in enumerate(events) if e.kind == "alarm" and e.channel == c
            )
            first_onset = next(
                i for i, e in enumerate(events) if e.kind == "onset" and e.channel == c
            )
            assert first_alarm < first_onset
            r = streamed[c]
            assert r.detected
            tolerance = 80 if c % 4 else 20  # 10 dB: ramps ~11 ms MAE, steps ~1 ms
            assert abs(r.onset_index - truths[c]) <= tolerance  # type: ignore[operator]
            assert r.alarm_index > r.onset_index  # type: ignore[operator]
            assert r.offset_index is None or r.offset_index > r.onset_index  # type: ignore[operator]
            assert r.peak > 0
            assert r.area > 0
            assert r.snr_db > 3
        else:
            assert ("miss", c) in kinds
            assert not streamed[c].detected


def test_provenance_and_times() -> None:
    params = OnsetParams(rest_window_ms=400.0)
    x, truth = _trials(2000.0, 1, 20.0, seed=10)[0]
    times = 100.0 + np.arange(x.shape[0]) / 2000.0
    r = emg_onsets(x, 2000.0, 1000, params, times_s=times)[0]
    assert r.algorithm == "emg_onset.aglr"
    assert r.algorithm_version == ALGORITHM_VERSION
    assert r.params_hash == params_hash(params) != params_hash(OnsetParams())
    assert len(r.params_hash) == 12
    assert params_hash(OnsetParams(rest_window_ms=400)) == r.params_hash
    assert r.onset_s == pytest.approx(times[r.onset_index])  # type: ignore[index]
    assert r.alarm_s is not None
    assert r.alarm_s > r.onset_s
    assert abs(r.onset_index - truth) <= 4  # type: ignore[operator]


def test_parameter_errors_name_the_field() -> None:
    with pytest.raises(pydantic.ValidationError, match="aglr_treshold"):
        OnsetParams(aglr_treshold=3.0)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError, match="band_hz"):
        OnsetParams(band_hz=(450.0, 20.0))
    with pytest.raises(pydantic.ValidationError, match="method"):
        OnsetParams(method="hodges")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="band_hz"):
        emg_onsets(np.zeros((2000, 1)), 100.0, 1000, OnsetParams(band_hz=(60.0, 450.0)))
    with pytest.raises(ValueError, match="rest_window_ms"):
        emg_onsets(np.zeros((2000, 1)), 2000.0, 500)
    with pytest.raises(ValueError, match="history_s"):
        EmgOnsetDetector(2000.0, 1, history_s=0.5)
    with pytest.raises(RuntimeError, match="arm"):
        EmgOnsetDetector(2000.0, 1).results()


def _bmclab() -> tuple[np.ndarray, float]:
    data = np.loadtxt(DATA / "bmclab_emg.csv", delimiter=",")
    return data[:, 1], 1000.0


@pytest.mark.parametrize("method", METHODS)
def test_real_bmclab_bursts_found_near_visual_onsets(method: str) -> None:
    x, rate_hz = _bmclab()
    params = OnsetParams(method=method, rest_window_ms=250.0, response_window_ms=300.0)  # type: ignore[arg-type]
    for burst_s in (0.39, 1.39, 2.40):
        # sample i of the file is at t = (i + 1) ms
        stim = round((burst_s - 0.1) * rate_hz) - 1
        r = emg_onsets(x, rate_hz, stim, params)[0]
        assert r.detected, (method, burst_s)
        onset_s = (r.onset_index + 1) / rate_hz  # type: ignore[operator]
        assert abs(onset_s - burst_s) <= 0.05, (method, burst_s, onset_s)


def test_real_biosppy_adc_counts_same_as_volts() -> None:
    counts = np.loadtxt(DATA / "biosppy_emg_1.txt", comments="#")
    volts = (counts - 2048.0) * 3.3 / 4096.0
    for stim_s in (1.0, 15.0):
        stim = round(stim_s * 1000.0)
        a = emg_onsets(counts, 1000.0, stim)[0]
        b = emg_onsets(volts, 1000.0, stim)[0]
        assert a.detected
        assert b.detected
        assert stim < a.onset_index < stim + 500  # type: ignore[operator]
        assert abs(a.onset_index - b.onset_index) <= 1  # type: ignore[operator]
