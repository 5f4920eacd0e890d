"""Synthetic surface EMG with known onsets (the ground truth the onset detectors are measured on).

Model (per channel, all in µV):

- background = broadband amplifier noise (white, low-passed at min(500 Hz, 0.45 rate) like an
  anti-alias filter, so the in-band share is the same at 1, 2 and 4 kHz) + band-limited noise
  in `band_hz`; half the power each, total rms `noise_rms_uv`.
- a burst = amplitude-modulated band-limited Gaussian noise (the classic surface EMG model:
  filtered noise whose rms follows the activation). Its rms during the plateau is
  `noise_rms_uv * 10**(snr_db / 20)`, i.e. **SNR = 20 log10(burst rms / background rms)**, with
  both rms taken over the raw components (burst alone, background alone; tonic, mains and ECG
  are interference and not part of the SNR). `shape="step"` jumps to full amplitude at the
  onset; `"ramp"` rises linearly over `ramp_ms` starting at the onset (the onset is the first
  sample of the rise).
- tonic activity: band-limited noise of rms `tonic_rms_uv` all the time.
- mains: `mains_uv` peak at `mains_hz` plus 3rd and 5th harmonics at 1/3 and 1/5 of it.
- ECG: QRS-like complexes (a 90 ms biphasic wavelet, most energy 5-40 Hz) plus a T wave
  (0.3 Hz-wide bump) every 1.0 ± 0.05 s, `ecg_uv` peak.

`generate` is continuous across calls: filter states, burst schedules, mains phase and ECG beat
times all run on absolute sample indices, and the random draws come from child generators in
a fixed order, so generating 1000 samples at once or as 10 x 100 gives the same array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from nmcore.dsp import SosFilter, butter_sos, sosfilt

__all__ = ["EmgGenerator", "synth_emg_trial"]

FloatArray = npt.NDArray[np.float64]
Shape = Literal["step", "ramp"]

_FILTER_ORDER = 4  # 4th-order Butterworth edges: steep enough to make the band meaningful
_WARMUP_S = 0.25  # filters run this long on throw-away noise so sample 0 is already stationary
_ECG_RR_S = 1.0
_ECG_RR_SD_S = 0.05
_ECG_TEMPLATE_S = 0.6


@dataclass(frozen=True, slots=True)
class _Burst:
    onset: int
    duration: int
    amplitude_uv: float
    ramp: int  # samples of linear rise (0 = step)


def _noise_gain(sos: FloatArray, rate_hz: float) -> float:
    """rms of the filter's output for unit-variance white input (sqrt of impulse energy)."""
    n = int(2.0 * rate_hz)  # 2 s of impulse response: the 20 Hz edge has decayed by then
    impulse = np.zeros(n)
    impulse[0] = 1.0
    h, _ = sosfilt(sos, impulse)
    return float(np.sqrt(np.sum(h * h)))


def _ecg_template(rate_hz: float) -> FloatArray:
    """One heart beat: biphasic QRS (derivative of a 15 ms Gaussian, ~15 Hz) + slow T wave."""
    t = np.arange(int(_ECG_TEMPLATE_S * rate_hz)) / rate_hz
    qrs_t, qrs_sd = 0.05, 0.012
    qrs = -(t - qrs_t) / qrs_sd * np.exp(-0.5 * ((t - qrs_t) / qrs_sd) ** 2)
    qrs /= np.max(np.abs(qrs))
    t_wave = 0.3 * np.exp(-0.5 * ((t - 0.3) / 0.05) ** 2)
    return np.asarray(qrs + t_wave, dtype=np.float64)


class EmgGenerator:
    """Continuous multi-channel synthetic EMG in µV. See the module docstring for the model."""

    def __init__(
        self,
        *,
        rate_hz: float,
        n_channels: int,
        rng: np.random.Generator,
        noise_rms_uv: float = 5.0,
        band_hz: tuple[float, float] = (20.0, 450.0),
        tonic_rms_uv: float = 0.0,
        mains_hz: float = 50.0,
        mains_uv: float = 0.0,
        ecg_uv: float = 0.0,
    ) -> None:
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be > 0 (got {rate_hz})")
        if n_channels < 1:
            raise ValueError(f"n_channels must be >= 1 (got {n_channels})")
        nyquist_hz = rate_hz / 2.0
        lo_hz, hi_hz = float(band_hz[0]), min(float(band_hz[1]), 0.9 * nyquist_hz)
        if not 0.0 < lo_hz < hi_hz:
            raise ValueError(f"band_hz must be (low, high) with 0 < low < high (got {band_hz})")
        self.rate_hz = float(rate_hz)
        self.n_channels = n_channels
        self.noise_rms_uv = float(noise_rms_uv)
        self.tonic_rms_uv = float(tonic_rms_uv)
        self.mains_hz = float(mains_hz)
        self.mains_uv = float(mains_uv)
        self.ecg_uv = float(ecg_uv)
        # Independent child streams: noise draws and ECG beat times never interleave, which
        # keeps the output identical however the caller chunks `generate`.
        seeds = rng.integers(0, 2**63 - 1, size=4)
        self._noise_rng = np.random.default_rng(int(seeds[0]))
        self._ecg_rng = np.random.default_rng(int(seeds[1]))
        phase_rng = np.random.default_rng(int(seeds[2]))
        warm_rng = np.random.default_rng(int(seeds[3]))

        band_sos = butter_sos(_FILTER_ORDER, (lo_hz, hi_hz), rate_hz, "bandpass")
        white_sos = butter_sos(_FILTER_ORDER, min(500.0, 0.45 * rate_hz), rate_hz, "lowpass")
        band_gain = _noise_gain(band_sos, rate_hz)
        white_gain = _noise_gain(white_sos, rate_hz)
        # Streams per channel: 0 broadband background, 1 band background, 2 burst, 3 tonic.
        self._filters = [
            SosFilter(white_sos, n_channels),
            SosFilter(band_sos, n_channels),
            SosFilter(band_sos, n_channels),
            SosFilter(band_sos, n_channels),
        ]
        self._gains = np.array([white_gain, band_gain, band_gain, band_gain])
        warm = warm_rng.standard_normal((int(_WARMUP_S * rate_hz), 4 * n_channels))
        for s, filt in enumerate(self._filters):
            filt.process(np.ascontiguousarray(warm[:, s * n_channels : (s + 1) * n_channels]))

        self._mains_phase = phase_rng.uniform(0.0, 2.0 * np.pi, size=(3, n_channels))
        self._ecg_scale = phase_rng.uniform(0.5, 1.0, size=n_channels)  # lead geometry differs
        self._ecg_template = _ecg_template(rate_hz)
        first_beat_s = float(self._ecg_rng.uniform(0.0, _ECG_RR_S))
        self._beats: list[int] = [int(first_beat_s * rate_hz)]
        self._bursts: list[list[_Burst]] = [[] for _ in range(n_channels)]
        self._position = 0

    @property
    def position(self) -> int:
        """Absolute index of the next sample `generate` returns."""
        return self._position

    def schedule_burst(
        self,
        channel: int,
        onset_index: int,
        duration_samples: int,
        snr_db: float,
        shape: Shape = "step",
        ramp_ms: float = 50.0,
    ) -> None:
        """Add a burst on `channel` starting at absolute sample `onset_index` (the truth onset).

        The plateau rms is `noise_rms_uv * 10**(snr_db/20)`; a ramp reaches it after `ramp_ms`.
        Overlapping bursts add their amplitudes.
        """
        if not 0 <= channel < self.n_channels:
            raise ValueError(f"channel must be in [0, {self.n_channels}) (got {channel})")
        if duration_samples < 1:
            raise ValueError(f"duration_samples must be >= 1 (got {duration_samples})")
        if shape not in ("step", "ramp"):
            raise ValueError(f"shape must be 'step' or 'ramp' (got {shape!r})")
        ramp = 0 if shape == "step" else max(1, round(ramp_ms * 1e-3 * self.rate_hz))
        amplitude = self.noise_rms_uv * 10.0 ** (snr_db / 20.0)
        self._bursts[channel].append(_Burst(onset_index, duration_samples, amplitude, ramp))

    def _envelope(self, channel: int, start: int, n: int) -> FloatArray:
        idx = np.arange(start, start + n)
        env = np.zeros(n)
        for b in self._bursts[channel]:
            if b.onset >= start + n or b.onset + b.duration <= start:
                continue
            rel = (idx - b.onset).astype(np.float64)
            active = (rel >= 0) & (rel < b.duration)
            gain = np.ones(n) if b.ramp == 0 else np.clip((rel + 1.0) / b.ramp, 0.0, 1.0)
            env += np.where(active, gain * b.amplitude_uv, 0.0)
        return env

    def _ecg(self, start: int, n: int) -> FloatArray:
        out = np.zeros(n)
        tpl = self._ecg_template
        while self._beats[-1] < start + n:
            rr = self._ecg_rng.normal(_ECG_RR_S, _ECG_RR_SD_S)
            self._beats.append(self._beats[-1] + int(rr * self.rate_hz))
        for beat in self._beats:
            lo, hi = max(start, beat), min(start + n, beat + len(tpl))
            if lo < hi:
                out[lo - start : hi - start] += tpl[lo - beat : hi - beat]
        # Beats that can no longer reach future samples are dropped to keep the list short.
        self._beats = [b for b in self._beats if b + len(tpl) > start + n] or self._beats[-1:]
        return out

    def generate(self, n_samples: int, activity_uv: FloatArray | None = None) -> FloatArray:
        """The next `n_samples` samples, (n_samples, n_channels) in µV.

        `activity_uv` (n_samples, n_channels): an extra burst amplitude (rms µV of the burst
        carrier) per sample, e.g. a voluntary contraction; it adds to the scheduled bursts."""
        n, ch = int(n_samples), self.n_channels
        start = self._position
        raw = self._noise_rng.standard_normal((n, 4 * ch))
        streams = []
        for s, filt in enumerate(self._filters):
            block = np.ascontiguousarray(raw[:, s * ch : (s + 1) * ch])
            streams.append(filt.process(block) / self._gains[s])
        half = self.noise_rms_uv / np.sqrt(2.0)
        out: FloatArray = half * streams[0] + half * streams[1]
        for c in range(ch):
            env = self._envelope(c, start, n)
            if activity_uv is not None:
                env = env + activity_uv[:, c]
            out[:, c] += env * streams[2][:, c]
        if self.tonic_rms_uv > 0.0:
            out += self.tonic_rms_uv * streams[3]
        if self.mains_uv > 0.0:
            t = np.arange(start, start + n)[:, None] / self.rate_hz
            for k, harmonic in enumerate((1, 3, 5)):
                w = 2.0 * np.pi * harmonic * self.mains_hz
                out += (self.mains_uv / harmonic) * np.sin(w * t + self._mains_phase[k])
        if self.ecg_uv > 0.0:
            out += self.ecg_uv * self._ecg(start, n)[:, None] * self._ecg_scale[None, :]
        self._position += n
        return out


def synth_emg_trial(
    rng: np.random.Generator,
    *,
    rate_hz: float,
    duration_s: float,
    onset_s: float | None,
    snr_db: float,
    shape: Shape = "step",
    ramp_ms: float = 50.0,
    burst_s: float = 0.5,
    n_channels: int = 1,
    noise_rms_uv: float = 5.0,
    band_hz: tuple[float, float] = (20.0, 450.0),
    tonic_rms_uv: float = 0.0,
    mains_hz: float = 50.0,
    mains_uv: float = 0.0,
    ecg_uv: float = 0.0,
) -> FloatArray:
    """One trial record (n, n_channels) in µV with a burst at `onset_s` on every channel
    (sample `round(onset_s * rate_hz)` is the truth onset); `onset_s=None`: noise only."""
    gen = EmgGenerator(
        rate_hz=rate_hz,
        n_channels=n_channels,
        rng=rng,
        noise_rms_uv=noise_rms_uv,
        band_hz=band_hz,
        tonic_rms_uv=tonic_rms_uv,
        mains_hz=mains_hz,
        mains_uv=mains_uv,
        ecg_uv=ecg_uv,
    )
    if onset_s is not None:
        onset = round(onset_s * rate_hz)
        for c in range(n_channels):
            gen.schedule_burst(c, onset, max(1, round(burst_s * rate_hz)), snr_db, shape, ramp_ms)
    return gen.generate(round(duration_s * rate_hz))
