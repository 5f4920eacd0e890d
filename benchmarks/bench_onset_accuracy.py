"""Onset accuracy on synthetic EMG with known onsets: nmcore's methods next to biosppy's onset
detectors and NeuroKit2's emg_activation, on the same records in the same run.

Records: 2 kHz (also 1 and 4 kHz for the default method), 1.5 s, stimulus at 0.5 s, rest
window the 500 ms before it, response window the 500 ms after it; the true onset is uniform in
[stimulus + 50 ms, stimulus + 350 ms]; 5 µV background; step or 50 ms ramp onsets at
3, 6, 10, 20 dB (SNR = 20 log10(burst rms / background rms)); plus noise-only records.

Definitions: an onset is *detected* when the method reports one inside the response window.
A trial is a *miss* when nothing is detected or the detected onset is more than 50 ms from the
truth; misses are excluded from the MAE. A *false alarm* is a detection on a noise-only record
or a detected onset more than 50 ms before the truth. Alarm delay = alarm sample - true onset
(causal nmcore methods only; the others are offline and have no alarm).

biosppy detectors get biosppy's own EMG filtering (4th-order 100 Hz high-pass, zero-phase, as
`biosppy.signals.emg.emg` does) and the rest window as [start, end] indices; parameters are the
published ones (25 ms windows, 3 SD, Solnik j = 15, Bonato chi-square 5.99, 1 of 5). NeuroKit2
runs emg_clean -> emg_amplitude -> emg_activation with its defaults.

Usage: .venv/bin/python benchmarks/bench_onset_accuracy.py [--smoke] [--trials N] [--noise N]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from nmcore.detect.emg import OnsetParams, emg_onsets
from nmcore.sim.emg import synth_emg_trial

REST_S = 0.5
RESPONSE_S = 0.5
DURATION_S = 1.5
MISS_MS = 50.0
SNRS = (20.0, 10.0, 6.0, 3.0)
SHAPES = ("step", "ramp")
NMCORE_METHODS = ("aglr", "cusum", "hodges_bui", "tkeo", "bonato")
GOAL_MAE_STEP = {20.0: 1.0, 10.0: 2.0, 6.0: 4.0, 3.0: 8.0}
GOAL_MAE_RAMP = {20.0: 5.0, 10.0: 15.0}

Detector = Callable[[np.ndarray, float, int], tuple[int | None, int | None]]


def make_records(
    rng: np.random.Generator, rate_hz: float, n: int, snr_db: float, shape: str
) -> list[tuple[np.ndarray, int]]:
    out = []
    for _ in range(n):
        onset_s = REST_S + 0.05 + rng.uniform(0.0, 0.3)
        x = synth_emg_trial(
            rng,
            rate_hz=rate_hz,
            duration_s=DURATION_S,
            onset_s=onset_s,
            snr_db=snr_db,
            shape=shape,  # type: ignore[arg-type]
        )[:, 0]
        out.append((x, round(onset_s * rate_hz)))
    return out


def nmcore_detector(method: str, **extra: float) -> Detector:
    params = OnsetParams(
        method=method,
        rest_window_ms=REST_S * 1e3,
        response_window_ms=RESPONSE_S * 1e3,
        **extra,
    )

    def run(x: np.ndarray, rate_hz: float, stim: int) -> tuple[int | None, int | None]:
        r = emg_onsets(x, rate_hz, stim, params)[0]
        return r.onset_index, r.alarm_index

    return run


def _first_after(onsets: Any, stim: int, end: int) -> int | None:
    arr = np.asarray(onsets, dtype=np.int64).ravel()
    arr = arr[(arr >= stim) & (arr < end)]
    return int(arr[0]) if arr.size else None


def biosppy_detectors() -> dict[str, Detector]:
    from biosppy.signals import emg as bemg
    from biosppy.signals import tools as btools

    def prep(x: np.ndarray, rate_hz: float) -> np.ndarray:
        filtered, _, _ = btools.filter_signal(
            signal=x,
            ftype="butter",
            band="highpass",
            order=4,
            frequency=100,
            sampling_rate=rate_hz,
        )
        return np.asarray(filtered)

    def wrap(fn: Callable[[np.ndarray, float, list[int]], Any]) -> Detector:
        def run(x: np.ndarray, rate_hz: float, stim: int) -> tuple[int | None, int | None]:
            y = prep(x, rate_hz)
            rest = [stim - round(REST_S * rate_hz), stim]
            onsets = np.asarray(fn(y, rate_hz, rest)["onsets"])
            return _first_after(onsets, stim, stim + round(RESPONSE_S * rate_hz)), None

        return run

    def hb(y: np.ndarray, fs: float, rest: list[int]) -> Any:
        return bemg.hodges_bui_onset_detector(
            signal=y, rest=rest, sampling_rate=fs, size=round(0.025 * fs), threshold=3
        )

    def solnik(y: np.ndarray, fs: float, rest: list[int]) -> Any:
        return bemg.solnik_onset_detector(
            signal=y,
            rest=rest,
            sampling_rate=fs,
            threshold=15,
            active_state_duration=round(0.025 * fs),
        )

    def bonato(y: np.ndarray, fs: float, rest: list[int]) -> Any:
        return bemg.bonato_onset_detector(
            signal=y,
            rest=rest,
            sampling_rate=fs,
            threshold=5.99,
            active_state_duration=round(0.025 * fs / 2),
            samples_above_fail=1,
            fail_size=5,
        )

    return {
        "biosppy.hodges_bui": wrap(hb),
        "biosppy.solnik": wrap(solnik),
        "biosppy.bonato": wrap(bonato),
    }


def neurokit_detector() -> Detector:
    import neurokit2 as nk

    def run(x: np.ndarray, rate_hz: float, stim: int) -> tuple[int | None, int | None]:
        clean = nk.emg_clean(x, sampling_rate=int(rate_hz))
        amp = nk.emg_amplitude(clean)
        _, info = nk.emg_activation(emg_amplitude=amp, sampling_rate=int(rate_hz))
        return _first_after(info["EMG_Onsets"], stim, stim + round(RESPONSE_S * rate_hz)), None

    return run


def evaluate(
    det: Detector, records: list[tuple[np.ndarray, int]], rate_hz: float
) -> dict[str, float | int | None]:
    stim = round(REST_S * rate_hz)
    errs, delays = [], []
    misses = false_alarms = 0
    for x, truth in records:
        onset, alarm = det(x, rate_hz, stim)
        if onset is None:
            misses += 1
            continue
        err_ms = (onset - truth) / rate_hz * 1e3
        if abs(err_ms) > MISS_MS:
            misses += 1
            false_alarms += int(err_ms < -MISS_MS)
            continue
        errs.append(err_ms)
        if alarm is not None:
            delays.append((alarm - truth) / rate_hz * 1e3)
    n = len(records)
    return {
        "mae_ms": float(np.mean(np.abs(errs))) if errs else None,
        "bias_ms": float(np.mean(errs)) if errs else None,
        "misses_pct": 100.0 * misses / n,
        "false_alarms": false_alarms,
        "median_alarm_delay_ms": float(np.median(delays)) if delays else None,
        "n": n,
    }


def count_false_alarms(det: Detector, noise: list[np.ndarray], rate_hz: float) -> int:
    stim = round(REST_S * rate_hz)
    return sum(det(x, rate_hz, stim)[0] is not None for x in noise)


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="few trials, finishes in seconds")
    ap.add_argument("--trials", type=int, default=100, help="trials per cell")
    ap.add_argument("--noise", type=int, default=300, help="noise-only records")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--no-peers", action="store_true", help="skip biosppy and NeuroKit2")
    args = ap.parse_args()
    n_trials, n_noise = (2, 4) if args.smoke else (args.trials, args.noise)
    rng = np.random.default_rng(args.seed)
    rate_hz = 2000.0
    t0 = time.perf_counter()

    detectors: dict[str, Detector] = {f"nmcore.{m}": nmcore_detector(m) for m in NMCORE_METHODS}
    # the default without its ramp-model look-back: the step-optimal setting
    detectors["nmcore.aglr_step_only"] = nmcore_detector("aglr", ramp_max_ms=0.0)
    if not args.no_peers:
        detectors.update(biosppy_detectors())
        detectors["neurokit2.emg_activation"] = neurokit_detector()
    baseline_name = "biosppy.hodges_bui" if not args.no_peers else "nmcore.hodges_bui"

    cells = {
        (shape, snr): make_records(rng, rate_hz, n_trials, snr, shape)
        for shape in SHAPES
        for snr in SNRS
    }
    noise = [
        synth_emg_trial(rng, rate_hz=rate_hz, duration_s=DURATION_S, onset_s=None, snr_db=0.0)[:, 0]
        for _ in range(n_noise)
    ]
    results: dict[tuple[str, str, float], dict[str, Any]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peers warn about empty activations on noise
        for (shape, snr), recs in cells.items():
            for name, det in detectors.items():
                results[(name, shape, snr)] = evaluate(det, recs, rate_hz)
        fa_noise = {
            name: count_false_alarms(det, noise, rate_hz) for name, det in detectors.items()
        }

    for (name, shape, snr), res in results.items():
        base = results[(baseline_name, shape, snr)]
        value, base_value = res["mae_ms"], base["mae_ms"]
        emit(
            {
                "name": f"onset_mae.{shape}.{snr:g}dB.{name}",
                "value": value,
                "unit": "ms",
                "baseline": {"name": baseline_name, "value": base_value},
                "ratio": (base_value / value) if value and base_value else None,
                **{k: v for k, v in res.items() if k != "mae_ms"},
                "rate_hz": rate_hz,
            }
        )
    base_fa = fa_noise[baseline_name]
    for name, fa in fa_noise.items():
        emit(
            {
                "name": f"noise_only_false_alarms.{name}",
                "value": fa,
                "unit": f"records of {n_noise}",
                "baseline": {"name": baseline_name, "value": base_fa},
                "ratio": None,
            }
        )

    # Unit and rate invariance of the default method (step onsets).
    default = detectors["nmcore.aglr"]
    for scale in (1e-6, 4096.0):
        for snr in SNRS:
            scaled = [(x * scale, t) for x, t in cells[("step", snr)]]
            res = evaluate(default, scaled, rate_hz)
            emit(
                {
                    "name": f"onset_mae.step.{snr:g}dB.nmcore.aglr.scale_{scale:g}",
                    "value": res["mae_ms"],
                    "unit": "ms",
                    "baseline": {
                        "name": "nmcore.aglr.unscaled",
                        "value": results[("nmcore.aglr", "step", snr)]["mae_ms"],
                    },
                    "ratio": None,
                    "misses_pct": res["misses_pct"],
                }
            )
    rate_results: dict[tuple[float, float], dict[str, Any]] = {}
    for other_hz in (1000.0, 4000.0):
        for snr in SNRS:
            recs = make_records(rng, other_hz, n_trials, snr, "step")
            res = evaluate(default, recs, other_hz)
            rate_results[(other_hz, snr)] = res
            emit(
                {
                    "name": f"onset_mae.step.{snr:g}dB.nmcore.aglr.rate_{other_hz:g}",
                    "value": res["mae_ms"],
                    "unit": "ms",
                    "baseline": {
                        "name": "nmcore.aglr.2000Hz",
                        "value": results[("nmcore.aglr", "step", snr)]["mae_ms"],
                    },
                    "ratio": None,
                    **{k: v for k, v in res.items() if k != "mae_ms"},
                }
            )
        other_noise = [
            synth_emg_trial(rng, rate_hz=other_hz, duration_s=DURATION_S, onset_s=None, snr_db=0)[
                :, 0
            ]
            for _ in range(n_noise)
        ]
        emit(
            {
                "name": f"noise_only_false_alarms.nmcore.aglr.rate_{other_hz:g}",
                "value": count_false_alarms(default, other_noise, other_hz),
                "unit": f"records of {n_noise}",
                "baseline": {"name": "nmcore.aglr.2000Hz", "value": fa_noise["nmcore.aglr"]},
                "ratio": None,
            }
        )

    # Goals for the default method.
    def goal(name: str, value: float | None, limit: float) -> None:
        met = value is not None and value <= limit
        emit({"name": f"goal.{name}", "value": value, "unit": "", "goal": limit, "met": met})

    for snr, limit in GOAL_MAE_STEP.items():
        goal(f"step_mae_ms.{snr:g}dB", results[("nmcore.aglr", "step", snr)]["mae_ms"], limit)
    for snr in (20.0, 10.0, 6.0):
        goal(f"step_misses_pct.{snr:g}dB", results[("nmcore.aglr", "step", snr)]["misses_pct"], 1.0)
    goal("noise_only_false_alarms", fa_noise["nmcore.aglr"], 0)
    for snr, limit in GOAL_MAE_RAMP.items():
        goal(f"ramp_mae_ms.{snr:g}dB", results[("nmcore.aglr", "ramp", snr)]["mae_ms"], limit)
    goal(
        "median_alarm_delay_ms.step.10dB",
        results[("nmcore.aglr", "step", 10.0)]["median_alarm_delay_ms"],
        15.0,
    )
    emit({"name": "wall_time", "value": time.perf_counter() - t0, "unit": "s"})


if __name__ == "__main__":
    main()
