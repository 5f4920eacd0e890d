"""EMG onset detection: muscle onset latency after a perturbation or stimulus.

Every method is causal: an alarm is raised from past samples only, then the onset is refined
by looking back into the buffered history; both are reported. Thresholds are in statistical
units (multiples of the rest SD, chi-square quantiles, log-likelihood ratios) computed from a
rest window before the stimulus *in the same domain as the test statistic*, so results do not
change with the signal's unit (V, mV, µV, ADC counts). Durations are in ms and converted with
the sampling rate.

Processing: causal Butterworth band-pass (default 20-450 Hz, 2nd order per edge; the upper edge
is clipped to 0.45 x rate), then one of

- ``aglr`` (default): approximate generalized likelihood ratio for a variance increase
  (Staude & Wolf 1999, IEEE TBME 46:1369; Staude et al. 2001, IEEE TBME 48:1292): the
  log-likelihood ratio of the last `aglr_window_ms` against the rest variance, alarm above
  `aglr_h`; `refine_ms` later the onset is looked for in the `lookback_ms` before the alarm
  as the posterior median of the change time under a step-or-ramp model: the amplitude
  jumps (a step) or rises linearly over R <= `ramp_max_ms` (`ramp_steps` lengths), the
  onset being the first sample of the rise; the plateau variance is the mean square after
  the alarm; a step is `e^ramp_penalty` times as likely a priori as a ramp. The median (not
  the maximum) of the posterior: it minimises the expected absolute error and does not jump
  to a distant near-tie. The look-back runs on the band-passed signal whitened by an AR(8)
  model of the rest window (when the band is narrow against the rate, kappa < 0.5, e.g.
  20-450 Hz at 2 and 4 kHz): the causal band-pass attenuates its edges and the band above,
  it does not empty them, and whitening gives their timing information back (no band-pass
  delay to correct). Without a rest window (rest statistics passed to `arm`) or at 1 kHz it
  runs on y**2. `ramp_max_ms = 0`: the maximum-likelihood step time on y**2 (Staude).
- ``cusum``: Page's CUSUM for a variance increase by `cusum_ratio` (Page 1954, Biometrika
  41:100); onset = the sample after the CUSUM's last zero (its restart point).
- ``hodges_bui``: rectify, 50 Hz low-pass envelope, mean + `h_sd` SD of rest held for
  `min_duration_ms` (Hodges & Bui 1996, EEG Clin Neurophysiol 101:511).
- ``tkeo``: Teager-Kaiser energy operator, rectify, 50 Hz low-pass, mean + `tkeo_h_sd` SD of
  rest held for `min_duration_ms` (Solnik et al. 2010, Eur J Appl Physiol 110:489).
- ``bonato``: double threshold: (y[k-1]^2 + y[k]^2) / sigma0^2 against the chi-square(2)
  quantile of `bonato_pfa`, at least `bonato_min_above` of `bonato_window_ms` samples above
  (Bonato et al. 1998, IEEE TBME 45:287).

Variance detectors scale their per-sample log-likelihood by kappa = min(1, 2 B / rate) (B the
pass band width): band-limited samples are correlated, and kappa counts the independent ones,
which keeps the thresholds valid at 1, 2 and 4 kHz.

After an onset: offset = first sample after the onset (at or after the alarm: a ramp's
first milliseconds are quieter than the offset level) at which the 25 ms moving rms of the
band-passed signal falls below `offset_ratio` x rest rms; peak = the largest moving rms between
onset and offset; area = the integral of the moving rms over that interval (signal unit x s);
snr_db = 10 log10(mean square over onset..offset / rest mean square).
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nmcore.detect import _emg_kernels as k
from nmcore.dsp import butter_sos, sosfilt

__all__ = [
    "ALGORITHM_VERSION",
    "EmgOnsetDetector",
    "Onset",
    "OnsetEvent",
    "OnsetParams",
    "emg_onsets",
    "params_hash",
    "rest_params_hash",
]

ALGORITHM_VERSION = "1.1.0"  # 1.1.0: whitened step-or-ramp posterior-median look-back
FloatArray = npt.NDArray[np.float64]
Method = Literal["aglr", "cusum", "hodges_bui", "tkeo", "bonato"]

_METHOD_CODES = {
    "hodges_bui": k.M_HODGES_BUI,
    "tkeo": k.M_TKEO,
    "bonato": k.M_BONATO,
    "aglr": k.M_AGLR,
    "cusum": k.M_CUSUM,
}
_NYQUIST_FRACTION = 0.45  # upper band edge kept below Nyquist (450 Hz at 1 kHz)
_OFFSET_RMS_MS = 25.0
# The ramp likelihood is summed over 2 ms blocks against the block mean of the ramp profile:
# as accurate as per sample (measured: the same MAE to 0.05 ms at 10 and 20 dB), 4x cheaper
# at 2 kHz; 2 ms spans about one independent sample of a 20-450 Hz band.
_RAMP_BLOCK_MS = 2.0


class OnsetParams(BaseModel):
    """Onset detection parameters. Durations in ms; thresholds in statistical units."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = "aglr"
    band_hz: tuple[float, float] = (20.0, 450.0)
    band_order: int = Field(2, ge=1, le=8, description="Butterworth order per band edge")
    rest_window_ms: float = Field(500.0, gt=0, description="rest statistics before stimulus")
    response_window_ms: float = Field(500.0, gt=0, description="onsets searched after stimulus")
    # Hodges & Bui, TKEO
    envelope_lowpass_hz: float = Field(50.0, gt=0)
    h_sd: float = Field(3.0, gt=0, description="Hodges-Bui: rest SD multiple")
    tkeo_h_sd: float = Field(15.0, gt=0, description="TKEO: rest SD multiple")
    min_duration_ms: float = Field(25.0, ge=0, description="HB/TKEO: time above threshold")
    # Bonato
    bonato_pfa: float = Field(0.05, gt=0, lt=1, description="false-alarm probability per pair")
    bonato_window_ms: float = Field(25.0, gt=0)
    bonato_min_above: float = Field(
        0.5, gt=0, le=1, description="fraction of the window's samples above threshold"
    )
    # AGLR
    aglr_window_ms: float = Field(25.0, gt=0)
    aglr_h: float = Field(18.0, gt=0, description="log-likelihood ratio alarm threshold")
    refine_ms: float = Field(100.0, ge=0, description="data after the alarm used by the look-back")
    lookback_ms: float = Field(150.0, gt=0)
    ramp_max_ms: float = Field(75.0, ge=0, description="ramp-model look-back: longest ramp")
    ramp_steps: int = Field(6, ge=1, le=50, description="ramp lengths tried (0..ramp_max_ms)")
    # ln 9: a ramp has prior probability 0.1. At 10 dB one trial barely tells a step from a
    # 50 ms ramp (a burst that starts weak looks like a ramp), so this prior sets the trade
    # between the two. 10 dB MAE step / ramp on 800 dev trials each, whitened (2 kHz):
    # ln 4 1.13 / 9.5 ms, ln 9 0.96 / 10.6 ms, ln 19 0.81 / 11.8 ms; on y**2 (1 kHz, no rest
    # window): ln 4 2.2 / 11.2, ln 9 1.8 / 13.5, ln 19 1.6 / 15.5 ms, steps only 1.3 / 22.8 ms.
    ramp_penalty: float = Field(
        math.log(9.0),
        ge=0,
        description="prior log-odds of a step against a ramp onset (log-likelihood units)",
    )
    # CUSUM
    cusum_ratio: float = Field(4.0, gt=1, description="design variance ratio")
    cusum_h: float = Field(18.0, gt=0, description="log-likelihood ratio alarm threshold")
    # offset
    offset_ratio: float = Field(2.0, gt=1, description="offset: moving rms / rest rms below")

    @model_validator(mode="after")
    def _check_band(self) -> OnsetParams:
        lo, hi = self.band_hz
        if not 0 < lo < hi:
            raise ValueError(f"band_hz must be (low_hz, high_hz) with 0 < low < high, got {lo, hi}")
        return self


def params_hash(params: BaseModel, include: tuple[str, ...] | None = None) -> str:
    """Short stable hash of a parameter model: sha256 of its JSON with sorted keys, 12 hex
    (`include`: only these fields)."""
    text = params.model_dump_json(include=set(include) if include is not None else None)
    canonical = _canonical_json(text)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


# The parameters that define the rest statistics (the test-domain value and the band-passed
# signal): a stored calibration stays valid when only thresholds or the look-back change.
_REST_FIELDS = ("method", "band_hz", "band_order", "envelope_lowpass_hz")


def rest_params_hash(params: OnsetParams) -> str:
    """Hash of the parameters the rest statistics depend on (see `OnsetRestStats`)."""
    return params_hash(params, include=_REST_FIELDS)


@functools.lru_cache(maxsize=64)
def _params_hash_cached(params: BaseModel) -> str:
    return params_hash(params)


def _canonical_json(text: str) -> str:
    import json

    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Onset:
    """One channel's result for one trial. Indices are absolute sample indices of the record
    (or stream); `*_s` fields are filled when sample times were passed, else None."""

    channel: int
    onset_index: int | None
    alarm_index: int | None
    offset_index: int | None
    peak: float | None
    area: float | None
    snr_db: float | None
    detected: bool
    algorithm: str
    algorithm_version: str
    params_hash: str
    onset_s: float | None = None
    alarm_s: float | None = None
    offset_s: float | None = None


@dataclass(frozen=True, slots=True)
class OnsetEvent:
    """What a streaming `process` call reports as it happens: `kind="alarm"` (index = alarm
    sample), `"onset"` (index = refined onset), `"miss"` (window closed, index = its end)."""

    kind: Literal["alarm", "onset", "miss"]
    channel: int
    index: int


def _ms(ms: float, rate_hz: float) -> int:
    return max(1, round(ms * 1e-3 * rate_hz))


def _band(params: OnsetParams, rate_hz: float) -> tuple[float, float]:
    lo, hi = params.band_hz
    hi = min(hi, _NYQUIST_FRACTION * rate_hz)
    if lo >= hi:
        raise ValueError(
            f"band_hz low edge {lo} Hz must be below {hi} Hz at {rate_hz} Hz: lower band_hz"
        )
    return lo, hi


def _aglr_ratio(h: float, kappa: float, window: float) -> float:
    """The r > 1 with kappa * window / 2 * (r - 1 - ln r) = h (bisection; f rises for r > 1)."""
    target = 2.0 * h / (kappa * window)
    lo, hi = 1.0, 2.0 + target
    while hi - 1.0 - math.log(hi) < target:
        hi *= 2.0
    for _ in range(80):  # 80 halvings: far below double precision of r
        mid = 0.5 * (lo + hi)
        if mid - 1.0 - math.log(mid) < target:
            lo = mid
        else:
            hi = mid
    return hi


def _variance_step_delay(sos: FloatArray, rate_hz: float) -> int:
    """Samples by which the causal band-pass delays a variance step: the median of its impulse
    response energy (the filtered variance is the input variance convolved with h**2, so half
    the step has come through after this many samples)."""
    impulse = np.zeros(max(16, round(0.5 * rate_hz)))
    impulse[0] = 1.0
    h, _ = sosfilt(sos, impulse)
    energy = np.cumsum(h * h)
    return int(np.searchsorted(energy, 0.5 * energy[-1]))


def build_coef(params: OnsetParams, rate_hz: float) -> FloatArray:
    """The kernel's coefficient vector for these params at this rate (a fresh copy)."""
    return _build_coef_cached(params, float(rate_hz)).copy()


@functools.lru_cache(maxsize=64)
def _build_coef_cached(params: OnsetParams, rate_hz: float) -> FloatArray:
    # filter design costs ~0.5 ms: offline trials reuse it (params are frozen, so hashable)
    lo, hi = _band(params, rate_hz)
    bp = butter_sos(params.band_order, (lo, hi), rate_hz, "bandpass")
    env_hz = min(params.envelope_lowpass_hz, _NYQUIST_FRACTION * rate_hz)
    env = butter_sos(2, env_hz, rate_hz, "lowpass")
    head = np.zeros(k.N_COEF_HEAD)
    head[k.C_METHOD] = _METHOD_CODES[params.method]
    if params.method == "hodges_bui":
        head[k.C_H] = params.h_sd
    elif params.method == "tkeo":
        head[k.C_H] = params.tkeo_h_sd
    elif params.method == "bonato":
        head[k.C_H] = -2.0 * math.log(params.bonato_pfa)  # chi-square(2) survival = e^{-x/2}
    elif params.method == "aglr":
        head[k.C_H] = params.aglr_h
    else:
        head[k.C_H] = params.cusum_h
    if params.method == "bonato":
        m = _ms(params.bonato_window_ms, rate_hz)
        head[k.C_RUN] = m
        head[k.C_BONATO_R] = max(1, math.ceil(params.bonato_min_above * m))
    else:
        head[k.C_RUN] = max(1, round(params.min_duration_ms * 1e-3 * rate_hz))
    head[k.C_WINDOW] = _ms(params.aglr_window_ms, rate_hz)
    head[k.C_KAPPA] = min(1.0, 2.0 * (hi - lo) / rate_hz)
    head[k.C_RHO] = params.cusum_ratio
    head[k.C_REFINE] = round(params.refine_ms * 1e-3 * rate_hz)
    head[k.C_LOOKBACK] = _ms(params.lookback_ms, rate_hz)
    head[k.C_RAMP_MAX] = round(params.ramp_max_ms * 1e-3 * rate_hz)
    head[k.C_RAMP_N] = params.ramp_steps
    head[k.C_RAMP_PENALTY] = params.ramp_penalty
    head[k.C_RAMP_BLOCK] = _ms(_RAMP_BLOCK_MS, rate_hz)
    head[k.C_REST] = _ms(params.rest_window_ms, rate_hz)
    head[k.C_AGLR_R] = _aglr_ratio(params.aglr_h, head[k.C_KAPPA], head[k.C_WINDOW])
    if params.method == "aglr":
        # the ML split finds the change in the *filtered* variance; CUSUM's last zero and
        # Bonato's first crossing are early-biased already and are left alone (measured)
        head[k.C_DELAY] = _variance_step_delay(bp, rate_hz)
    head[k.C_NBP] = bp.shape[0]
    head[k.C_NENV] = env.shape[0]
    return np.concatenate([head, bp.ravel(), env.ravel()])


class EmgOnsetDetector:
    """Streaming onset detector for one multi-channel EMG stream.

    `process(block)` runs the whole chain (filter, conditioning, history, detector) in one
    jitted call and returns the events raised in that block. `arm(stimulus_index)` sets each
    channel's rest statistics from the filtered history before the stimulus and starts testing
    at the stimulus (even if it lies in the past: missed samples are tested on the next call).
    `results()` gives the per-channel `Onset`s once every channel's window has closed.
    """

    def __init__(
        self,
        rate_hz: float,
        n_channels: int,
        params: OnsetParams | None = None,
        *,
        history_s: float | None = None,
    ) -> None:
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be > 0 (got {rate_hz})")
        if n_channels < 1:
            raise ValueError(f"n_channels must be >= 1 (got {n_channels})")
        self.params = params or OnsetParams()
        self.rate_hz = float(rate_hz)
        self.n_channels = n_channels
        p = self.params
        need_s = (p.rest_window_ms + p.response_window_ms + p.lookback_ms + p.refine_ms) * 1e-3
        if history_s is None:
            history_s = need_s + 1.0
        if history_s < need_s:
            raise ValueError(
                f"history_s must be >= {need_s:.3f} s (rest + response + look-back + refine)"
            )
        coef = build_coef(p, self.rate_hz)
        n_bp, n_env = int(coef[k.C_NBP]), int(coef[k.C_NENV])
        n_coef, z0, total = k.work_layout(n_bp, n_env, n_channels)
        # one packed float array and one ring array keep the kernel's argument count low
        self.work = np.zeros(total)
        self.work[:n_coef] = coef
        self.coef = self.work[:n_coef]
        self.fstate = self.work[n_coef:z0].reshape(n_channels, k.N_FSTATE)
        self.zstate = self.work[z0:].reshape(k.n_zstate_rows(n_bp, n_env), n_channels)
        self.istate = np.zeros((n_channels, k.N_ISTATE), dtype=np.int64)
        n_hist = round(history_s * self.rate_hz)
        # never read before written (arm checks the rest window is in the history)
        self.hist = np.empty((2, n_hist, n_channels))
        self.hist_y = self.hist[0]
        self.hist_d = self.hist[1]
        self._hash = _params_hash_cached(p)
        self._stimulus: int | None = None
        self._reported = np.zeros((n_channels, 2), dtype=bool)  # alarm, final

    @property
    def head(self) -> int:
        """Absolute index of the next sample to be processed."""
        return int(self.istate[0, k.I_HEAD])

    def process(self, block: FloatArray) -> list[OnsetEvent]:
        x = np.ascontiguousarray(block, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_channels:
            raise ValueError(f"block must be (n_samples, {self.n_channels}), got {x.shape}")
        n_events = k.emg_filter_chain_block(x, self.work, self.istate, self.hist)
        return self.collect_events() if n_events else []

    def collect_events(self) -> list[OnsetEvent]:
        """The events the chain raised since the last call (each alarm, onset or miss once).
        For callers that ran the chain kernel themselves (the pipeline's fused ingest)."""
        out: list[OnsetEvent] = []
        for c in range(self.n_channels):
            phase = self.istate[c, k.I_PHASE]
            alarm = int(self.istate[c, k.I_ALARM])
            if not self._reported[c, 0] and phase >= k.P_ALARMED and alarm >= 0:
                self._reported[c, 0] = True
                out.append(OnsetEvent("alarm", c, alarm))
            if not self._reported[c, 1] and phase == k.P_DONE:
                self._reported[c, 1] = True
                onset = int(self.istate[c, k.I_ONSET])
                if onset >= 0:
                    out.append(OnsetEvent("onset", c, onset))
                else:
                    out.append(OnsetEvent("miss", c, int(self.istate[c, k.I_END])))
        return out

    def arm(
        self,
        stimulus_index: int,
        rest: tuple[FloatArray, FloatArray, FloatArray] | None = None,
    ) -> None:
        """Start a trial whose stimulus is absolute sample `stimulus_index`.

        `rest`: the rest statistics (mean and SD of the test-domain value, mean square of the
        band-passed signal; one per channel) to use instead of the pre-stimulus window, e.g.
        from an EMG calibration (`nmcore.calibration.emg`) when no rest window exists."""
        p = self.params
        rest_n = _ms(p.rest_window_ms, self.rate_hz)
        head = self.head
        n_hist = self.hist_y.shape[0]
        if stimulus_index > head:
            raise ValueError(f"stimulus_index {stimulus_index} is after the newest sample {head}")
        if rest is not None:
            if stimulus_index < max(0, head - n_hist):
                raise ValueError(f"stimulus_index {stimulus_index} is no longer in the history")
            tiny = np.finfo(np.float64).tiny
            mu, sd, sig2 = (
                np.broadcast_to(np.asarray(v, np.float64), (self.n_channels,)) for v in rest
            )
            self.fstate[:, k.F_MU] = mu
            self.fstate[:, k.F_SD] = np.maximum(sd, tiny)
            self.fstate[:, k.F_SIG2] = np.maximum(sig2, tiny)
            self.fstate[:, k.F_REST_OK] = 0.0  # no rest window: the look-back cannot whiten
            self._start(stimulus_index)
            return
        if stimulus_index - rest_n < max(0, head - n_hist):
            raise ValueError(
                f"stimulus_index {stimulus_index}: the rest window ({p.rest_window_ms} ms) is "
                "not in the history; process more pre-stimulus data or shorten rest_window_ms"
            )
        if self.n_channels > 1:
            # one jitted pass; equal bit for bit to the numpy below (same summation order)
            k.rest_statistics(self.hist, stimulus_index - rest_n, stimulus_index, self.fstate)
        else:
            # numpy sums a single column pairwise: kept so one-channel results do not move
            idx = np.arange(stimulus_index - rest_n, stimulus_index) % n_hist
            d = self.hist_d[idx]
            y = self.hist_y[idx]
            tiny = np.finfo(np.float64).tiny
            self.fstate[:, k.F_MU] = d.mean(axis=0)
            self.fstate[:, k.F_SD] = np.maximum(d.std(axis=0), tiny)
            self.fstate[:, k.F_SIG2] = np.maximum((y * y).mean(axis=0), tiny)
        self.fstate[:, k.F_REST_OK] = 1.0
        self._start(stimulus_index)

    def _start(self, stimulus_index: int) -> None:
        p = self.params
        self.istate[:, k.I_PHASE] = k.P_ARMED
        self.istate[:, k.I_CURSOR] = stimulus_index
        self.istate[:, k.I_STIM] = stimulus_index
        self.istate[:, k.I_END] = stimulus_index + _ms(p.response_window_ms, self.rate_hz)
        self.istate[:, k.I_ALARM] = -1
        self.istate[:, k.I_ONSET] = -1
        self._reported[...] = False
        self._stimulus = stimulus_index

    def finish(self) -> list[OnsetEvent]:
        """End the trial with the data at hand (a record shorter than the response window):
        pending look-backs run on what is buffered, untriggered channels report a miss."""
        n_hist = self.hist_d.shape[0]
        head = self.head
        for c in range(self.n_channels):
            phase = self.istate[c, k.I_PHASE]
            if phase == k.P_ALARMED:
                self.istate[c, k.I_ONSET] = k.refine_onset(
                    self.hist_y,
                    self.hist_d,
                    c,
                    int(self.istate[c, k.I_STIM]),
                    int(self.istate[c, k.I_ALARM]),
                    head - 1,
                    float(self.fstate[c, k.F_SIG2]),
                    int(self.coef[k.C_LOOKBACK]),
                    int(self.coef[k.C_RAMP_MAX]),
                    int(self.coef[k.C_RAMP_N]),
                    int(self.coef[k.C_RAMP_BLOCK]),
                    float(self.coef[k.C_KAPPA]),
                    float(self.coef[k.C_RAMP_PENALTY]),
                    int(self.coef[k.C_DELAY]),
                    int(self.coef[k.C_REST]),
                    bool(self.fstate[c, k.F_REST_OK] > 0.0),
                    max(0, head - n_hist),
                )
            elif phase in (k.P_ARMED, k.P_TESTING):
                self.istate[c, k.I_ONSET] = -1
            self.istate[c, k.I_PHASE] = k.P_DONE
        return self.collect_events()

    def results(self, times_s: FloatArray | None = None) -> list[Onset]:
        """Per-channel results of the current trial. `times_s`: host time of every absolute
        sample index (or None); offsets use the data up to now."""
        if self._stimulus is None:
            raise RuntimeError("results() before arm(): no trial has been started")
        istate = self.istate
        done = istate[:, k.I_PHASE] == k.P_DONE
        onsets = np.where(done, istate[:, k.I_ONSET], -1)
        sig2 = self.fstate[:, k.F_SIG2].copy()
        ends = np.maximum(np.minimum(self.head, istate[:, k.I_END]), onsets + 1)
        metrics = np.zeros((self.n_channels, 4))
        # every channel's burst metrics in one jitted call (one dispatch per trial)
        k.burst_metrics_all(
            self.hist_y,
            onsets,
            ends,
            _ms(_OFFSET_RMS_MS, self.rate_hz),
            self.params.offset_ratio * np.sqrt(sig2),
            istate[:, k.I_ALARM].copy(),
            metrics,
        )
        algorithm = f"emg_onset.{self.params.method}"
        out: list[Onset] = []
        for c, (onset, alarm, s2, (off, peak, area_sum, mean_sq)) in enumerate(
            zip(
                onsets.tolist(),
                istate[:, k.I_ALARM].tolist(),
                sig2.tolist(),
                metrics.tolist(),
                strict=True,
            )
        ):
            if onset < 0:
                out.append(
                    Onset(
                        channel=c,
                        onset_index=None,
                        alarm_index=alarm if alarm >= 0 else None,
                        offset_index=None,
                        peak=None,
                        area=None,
                        snr_db=None,
                        detected=False,
                        algorithm=algorithm,
                        algorithm_version=ALGORITHM_VERSION,
                        params_hash=self._hash,
                    )
                )
                continue
            offset = int(off) if off >= 0 else None
            out.append(
                Onset(
                    channel=c,
                    onset_index=onset,
                    alarm_index=alarm,
                    offset_index=offset,
                    peak=peak,
                    area=area_sum / self.rate_hz,
                    snr_db=10.0 * math.log10(mean_sq / s2) if mean_sq > 0 else None,
                    detected=True,
                    algorithm=algorithm,
                    algorithm_version=ALGORITHM_VERSION,
                    params_hash=self._hash,
                    onset_s=None if times_s is None else float(times_s[onset]),
                    alarm_s=None if times_s is None else float(times_s[alarm]),
                    offset_s=None if times_s is None or offset is None else float(times_s[offset]),
                )
            )
        return out


def emg_onsets(
    x: FloatArray,
    rate_hz: float,
    stimulus_index: int,
    params: OnsetParams | None = None,
    *,
    times_s: FloatArray | None = None,
) -> list[Onset]:
    """Offline onsets of one trial record x (n_samples,) or (n_samples, n_channels).

    Runs exactly the streaming chain (the same kernel) over the record: the part before the
    stimulus, `arm`, the rest. Needs `rest_window_ms` of data before `stimulus_index`.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    n = arr.shape[0]
    p = params or OnsetParams()
    if not 0 <= stimulus_index < n:
        raise ValueError(
            f"stimulus_index must be within the record [0, {n}) (got {stimulus_index})"
        )
    det = EmgOnsetDetector(rate_hz, arr.shape[1], p, history_s=(n + 1) / rate_hz + 1.0)
    det.process(arr[:stimulus_index])
    det.arm(stimulus_index)
    det.process(arr[stimulus_index:])
    det.finish()
    return det.results(times_s)
