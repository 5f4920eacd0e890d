"""EMG rest calibration on synthetic recordings with KNOWN noise level, mains interference,
contraction amplitude, dead and clipped channels; and the rest statistics handed to the onset
detector are exactly the ones its own `arm` computes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nmcore.calibration.emg import fit_mains, rest, saturation_fraction
from nmcore.calibration.model import EmgValues
from nmcore.detect import _emg_kernels as k
from nmcore.detect.emg import EmgOnsetDetector, OnsetParams, rest_params_hash

RATE_HZ = 1000.0


def synth(
    rng: np.random.Generator,
    n: int,
    noise_uv: np.ndarray,
    mains_hz: float = 50.02,
    mains_uv: tuple[float, ...] = (8.0, 0.0, 3.0),
    dc_uv: float = 40.0,
) -> np.ndarray:
    t = np.arange(n) / RATE_HZ
    c = len(noise_uv)
    x = dc_uv + rng.standard_normal((n, c)) * noise_uv
    for h, a in enumerate(mains_uv, start=1):
        phase = rng.uniform(0, 2 * np.pi, c)
        x += a * np.cos(2 * np.pi * h * mains_hz * t[:, None] + phase)
    return x


def failed(checks) -> list[str]:
    return [c.name for c in checks if not c.passed and c.severity == "fail"]


def warned(checks) -> list[str]:
    return [c.name for c in checks if not c.passed and c.severity == "warn"]


def test_noise_and_mains_recovered_within_stated_sigma() -> None:
    noise = np.array([3.0, 1.5])
    z = []
    for seed in range(150):
        rng = np.random.default_rng(seed)
        x = synth(rng, 4000, noise)
        values, _, checks = rest(x, RATE_HZ, ["ta", "sol"])
        assert failed(checks) == []
        assert values.mains_nominal_hz == 50
        assert values.mains_hz == pytest.approx(50.02, abs=0.02)
        row = []
        for j, ch in enumerate(values.channels):
            row.append((ch.rest_rms_uv - noise[j]) / ch.rest_rms_sigma_uv)
            row.append((ch.mains_amplitude_uv[0] - 8.0) / ch.mains_amplitude_sigma_uv)
            row.append((ch.mains_amplitude_uv[2] - 3.0) / ch.mains_amplitude_sigma_uv)
        z.append(row)
    za = np.array(z)
    assert np.all((np.abs(za) <= 3).mean(axis=0) >= 0.97), (np.abs(za) <= 3).mean(axis=0)
    assert np.all((za * za).mean(axis=0) > 0.6), (za * za).mean(axis=0)
    assert np.all((za * za).mean(axis=0) < 1.8), (za * za).mean(axis=0)


def test_mains_above_limit_warns_and_60_hz_is_detected() -> None:
    rng = np.random.default_rng(1)
    x = synth(rng, 5000, np.array([2.0]), mains_hz=59.97, mains_uv=(12.0, 4.0))
    values, _, checks = rest(x, RATE_HZ, ["bf"])
    assert values.mains_nominal_hz == 60
    assert values.mains_source == "auto"
    assert values.mains_hz == pytest.approx(59.97, abs=0.02)
    assert values.channels[0].mains_amplitude_uv[:2] == pytest.approx([12.0, 4.0], abs=0.2)
    assert failed(checks) == []
    assert warned(checks) == ["mains:bf"]
    assert "reference/ground" in next(c.message for c in checks if c.name == "mains:bf")
    # given explicitly: that nominal is used
    values, _, _ = rest(x, RATE_HZ, ["bf"], mains_hz=60.0)
    assert values.mains_source == "given"
    assert values.mains_hz == pytest.approx(59.97, abs=0.02)


def test_fit_mains_without_mains_leaves_the_noise() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4000, 1)) * 2.0 + 10.0
    _, _, amps, resid = fit_mains(x, RATE_HZ, mains_hz=50.0)
    assert np.all(amps < 0.3)
    assert resid.std() == pytest.approx(2.0, rel=0.05)


def test_dead_channel_fails() -> None:
    rng = np.random.default_rng(3)
    x = synth(rng, 3000, np.array([3.0, 3.0, 3.0]), mains_uv=(1.0,))
    x[:, 1] = 12.5  # flat line
    x[:, 2] = rng.standard_normal(3000) * 0.1  # disconnected: amplifier noise only
    values, _, checks = rest(x, RATE_HZ, ["a", "b", "c"])
    assert failed(checks) == ["dead:b", "dead:c"]
    assert [c.dead for c in values.channels] == [False, True, True]
    assert not values.channels[1].saturated  # flat is dead, not clipped
    msg = next(c.message for c in checks if c.name == "dead:b")
    assert "constant" in msg
    assert "electrode" in msg


def test_saturated_channel_fails_with_and_without_full_scale() -> None:
    rng = np.random.default_rng(4)
    x = synth(rng, 3000, np.array([3.0, 3.0]), mains_uv=(1.0,))
    x[1000:1100, 0] = 5000.0  # a lifted electrode drove the input to the rail
    values, _, checks = rest(x, RATE_HZ, ["a", "b"])
    assert failed(checks) == ["saturated:a:rest"]
    assert values.channels[0].saturated_fraction == pytest.approx(100 / 3000)
    assert "lower the amplifier gain" in next(c.message for c in checks if c.name.startswith("sat"))
    # at full scale, single clipped samples count too
    x2 = synth(rng, 3000, np.array([3.0]), mains_uv=(1.0,))
    x2[500, 0] = -5000.0
    values, _, checks = rest(x2, RATE_HZ, ["a"], full_scale_uv=5000.0)
    assert failed(checks) == ["saturated:a:rest"]
    values, _, checks = rest(x2, RATE_HZ, ["a"])
    assert failed(checks) == []
    assert saturation_fraction(np.array([1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 0.0]), None)[0] == 5 / 7


def mvc(rng: np.random.Generator, amp_uv: np.ndarray, noise_uv: np.ndarray) -> np.ndarray:
    x = synth(rng, 5000, noise_uv, mains_uv=(1.0,))
    x[1500:3500] += rng.standard_normal((2000, len(amp_uv))) * amp_uv
    return x


def test_snr_against_mvc_and_the_minimum() -> None:
    rng = np.random.default_rng(5)
    noise = np.array([3.0, 3.0])
    amp = np.array([300.0, 20.0])  # a good muscle and a weak one
    x = synth(rng, 4000, noise, mains_uv=(1.0,))
    values, _, checks = rest(x, RATE_HZ, ["ta", "sol"], mvc_uv=mvc(rng, amp, noise))
    expected = 20 * np.log10(np.sqrt(amp**2 + noise**2) / noise)
    snr = [c.snr_db for c in values.channels]
    assert snr == pytest.approx(expected.tolist(), abs=0.5)
    assert failed(checks) == ["snr:sol"]
    assert "maximal contraction" in next(c.message for c in checks if c.name == "snr:sol")
    # a clipped MVC fails too
    m = mvc(rng, np.array([300.0, 300.0]), noise)
    m[:, 0] = np.clip(m[:, 0], -600.0, 600.0)
    _, _, checks = rest(x, RATE_HZ, ["ta", "sol"], mvc_uv=m)
    assert failed(checks) == ["saturated:ta:MVC"]


@pytest.mark.parametrize("method", ["aglr", "hodges_bui", "bonato"])
def test_onset_rest_stats_equal_what_the_detector_arm_computes(method: str) -> None:
    params = OnsetParams(method=method, rest_window_ms=750.0)
    rng = np.random.default_rng(6)
    n = 1000  # 250 ms settle + 750 ms rest window: both use the same samples
    x = synth(rng, n, np.array([3.0, 5.0]))
    values, _, _ = rest(x, RATE_HZ, ["a", "b"], onset_params=params)
    det = EmgOnsetDetector(RATE_HZ, 2, params, history_s=3.0)
    det.process(x)
    det.arm(n)
    for j, ch in enumerate(values.channels):
        assert ch.onset_rest is not None
        assert ch.onset_rest.method == method
        assert ch.onset_rest.mu == pytest.approx(det.fstate[j, k.F_MU], rel=1e-9)
        assert ch.onset_rest.sd == pytest.approx(det.fstate[j, k.F_SD], rel=1e-9)
        assert ch.onset_rest.sig2 == pytest.approx(det.fstate[j, k.F_SIG2], rel=1e-9)


@pytest.mark.parametrize("method", ["hodges_bui", "tkeo", "cusum"])
def test_onset_rest_stats_convert_to_another_unit(method: str) -> None:
    params = OnsetParams(method=method)
    rng = np.random.default_rng(9)
    x = synth(rng, 2000, np.array([3.0]))
    in_uv, _, _ = rest(x, RATE_HZ, ["a"], onset_params=params)
    in_mv, _, _ = rest(x * 1e-3, RATE_HZ, ["a"], onset_params=params, dead_rms_uv=0.0)
    a, b = in_uv.channels[0].onset_rest, in_mv.channels[0].onset_rest
    assert a is not None
    assert b is not None
    converted = a.scaled(1e-3, "mV")
    assert converted.unit == "mV"
    for name in ("mu", "sd", "sig2"):
        assert getattr(converted, name) == pytest.approx(getattr(b, name), rel=1e-6)


def test_onset_rest_stats_scale_with_the_noise() -> None:
    rng = np.random.default_rng(7)
    x = synth(rng, 5000, np.array([2.0, 4.0]), mains_uv=(0.0,))
    values, _, _ = rest(x, RATE_HZ, ["a", "b"])
    s = [c.onset_rest.sig2 for c in values.channels if c.onset_rest]
    assert s[1] / s[0] == pytest.approx(4.0, rel=0.1)
    # band-passed white noise keeps the band's share of its variance
    share = (450 - 20) / 500
    assert s[0] == pytest.approx(4.0 * share, rel=0.15)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(n_samples, 2\)"):
        rest(np.zeros((3000, 3)), RATE_HZ, ["a", "b"])
    with pytest.raises(ValueError, match="record at least"):
        rest(np.zeros((300, 1)), RATE_HZ, ["a"])


def test_values_roundtrip() -> None:
    rng = np.random.default_rng(8)
    values, stats, _ = rest(synth(rng, 2000, np.array([3.0])), RATE_HZ, ["a"])
    assert EmgValues.model_validate_json(values.model_dump_json()) == values
    assert stats["n_samples"] == 2000
    assert math.isfinite(stats["residual_ms_uv2"][0])


def test_rest_hash_ignores_thresholds_and_look_back_but_not_the_domain() -> None:
    """A stored rest calibration stays usable when only thresholds or the look-back change;
    a different band or method (another test domain) makes it unusable."""
    base = rest_params_hash(OnsetParams())
    assert rest_params_hash(OnsetParams(aglr_h=25.0, ramp_penalty=0.5, lookback_ms=90.0)) == base
    assert rest_params_hash(OnsetParams(band_hz=(30.0, 450.0))) != base
    assert rest_params_hash(OnsetParams(method="hodges_bui")) != base
