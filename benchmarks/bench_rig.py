"""Figures measured on the simulated rig through the whole daemon (drivers, supervisor,
sequence tracker, clock model, ring buffers, trial engine), against the simulator's truth.

- timestamp accuracy per transport (BLE 7.5/30/50 ms, USB-serial 16 ms bursts, 100 ppm drift):
  p50/p99/max |reconstructed sample time - true sample time| after 10 s of settling, next to
  host-arrival stamping (the samples of each delivered block stamped back from its arrival
  time at the nominal period: the usual practice; a simulated serial block is one USB burst,
  BLE gives a block per notification);
- perturbation onset error (trigger, exact; IMU cross-check), EMG onset error, premotor and
  motor time error against the truth, over many trials.

    .venv/bin/python benchmarks/bench_rig.py [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from nmcore.config import validate_station
from nmcore.runtime import eventloop
from nmcore.runtime.daemon import Daemon


def _emit(name: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"name": name, "value": round(float(value), 6), "unit": unit, **extra}))


def _station(transport: dict[str, Any], drift_ppm: float, n_trials: int, seed: int) -> Any:
    scenario = {"seed": seed, "n_trials": n_trials, "first_trial_s": 12.0, "trial_period_s": 6.0}
    dev = {"scenario": scenario, "clock": {"drift_ppm": drift_ppm}, "transport": transport}
    plat = {**dev, "clock": {"drift_ppm": drift_ppm / 2}}
    return validate_station(
        {
            "station": {"id": "bench"},
            "devices": [
                {"id": "platform", "driver": "sim.platform", "options": plat},
                {"id": "emg", "driver": "sim.emg", "options": {**dev, "snr_db": 10.0}},
                {"id": "plate", "driver": "sim.forceplate", "options": dev},
            ],
            "detectors": {
                "perturbation": {
                    "source": "trigger",
                    "trigger_stream": "platform.trigger",
                    "imu_stream": "platform.imu",
                    "imu_channels": ["acc_x", "acc_y", "acc_z"],
                },
                "emg_onset": {"stream": "emg.emg"},
                "force_response": {"stream": "plate.force"},
            },
            "mqtt": {"enabled": False},
        }
    )


async def _run(station: Any, duration_s: float) -> tuple[Daemon, list[dict[str, Any]]]:
    truth: list[dict[str, Any]] = []
    daemon = Daemon(station, realtime=False, truth=truth.append)
    arrival_err: dict[str, list[np.ndarray]] = {}
    ingest = daemon.pipeline.ingest

    def tap(block: Any) -> None:
        # the baseline: stamp the block's samples back from its arrival at the nominal period
        st = daemon.pipeline.streams[block.stream_id]
        arrival_err.setdefault(block.stream_id, []).append(
            np.array([block.counter, block.n_samples, block.arrival_s])
        )
        del st
        ingest(block)

    for sup in daemon.supervisors.values():
        sup._on_block = tap
    await daemon.run(duration_s)
    daemon.arrival_log = arrival_err  # type: ignore[attr-defined]
    return daemon, truth


def _timestamp_errors(
    daemon: Daemon, truth: list[dict[str, Any]], settle_s: float
) -> dict[str, Any]:
    clocks = {r["device_id"]: r for r in truth if r["type"] == "clock"}
    out = {}
    for sid, st in daemon.pipeline.streams.items():
        rec = clocks[st.desc.device_id]
        srec = rec["streams"][sid]
        t0, rate = rec["t_start_s"], srec["true_rate_hz"]
        ring = st.ring
        lo = max(ring.oldest, round(settle_s * st.desc.rate_hz))
        w = ring.window_by_index(lo, ring.head)
        ok = w.valid
        idx = np.arange(w.first_index, w.first_index + len(w.t_s))[ok]
        true_t = t0 + idx / rate
        model_err = np.abs(w.t_s[ok] - true_t) * 1e3
        # host-arrival baseline for the same samples
        log = np.array(daemon.arrival_log[sid])  # type: ignore[attr-defined]
        counters, n, arr = log[:, 0], log[:, 1], log[:, 2]
        bits = st.desc.counter_bits
        first = np.concatenate([[0], np.cumsum(np.diff(counters) % (1 << bits))]).astype(np.int64)
        base_t, base_idx = [], []
        period = 1.0 / st.desc.rate_hz
        for f, k, a in zip(first, n.astype(int), arr, strict=True):
            if f < lo:
                continue
            base_idx.append(f + np.arange(k))
            base_t.append(a - (k - 1 - np.arange(k)) * period)
        bi = np.concatenate(base_idx)
        base_err = np.abs(np.concatenate(base_t) - (t0 + bi / rate)) * 1e3
        out[sid] = (model_err, base_err)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    duration_s = 25.0 if args.smoke else 60.0
    cases = [
        ("serial16", {"kind": "serial", "serial_latency_ms": 16.0, "packet_samples": 7}),
        (
            "serial16_commensurate",
            {"kind": "serial", "serial_latency_ms": 16.0, "packet_samples": 8},
        ),
        ("ble7.5", {"kind": "ble", "ble_interval_ms": 7.5}),
        ("ble30", {"kind": "ble", "ble_interval_ms": 30.0}),
        ("ble50", {"kind": "ble", "ble_interval_ms": 50.0}),
    ]
    if args.smoke:
        cases = cases[:1] + cases[3:4]
    for name, transport in cases:
        daemon, truth = eventloop.run(_run(_station(transport, 100.0, 0, 3), duration_s))
        errs = _timestamp_errors(daemon, truth, settle_s=10.0)
        model = np.concatenate([e[0] for e in errs.values()])
        base = np.concatenate([e[1] for e in errs.values()])
        for q, label in ((50, "p50"), (99, "p99"), (100, "max")):
            _emit(
                f"timestamp_error_{label}_{name}",
                np.percentile(model, q),
                "ms",
                baseline={"name": "host_arrival", "value": round(float(np.percentile(base, q)), 4)},
                n_samples=int(model.size),
            )

    # trial accuracy: 10 dB EMG, serial-like links
    n_trials = 12 if args.smoke else 100
    station = _station({"kind": "serial", "packet_samples": 7}, 100.0, n_trials, 11)
    daemon, truth = eventloop.run(_run(station, 12.0 + 6.0 * n_trials + 3.0))
    true_trials = {r["trial"]: r for r in truth if r["type"] == "trial"}
    muscle = {(r["trial"], r["muscle"]): r for r in truth if r["type"] == "muscle_onset"}
    force = {r["trial"]: r for r in truth if r["type"] == "force_response"}
    results = [o for o in daemon.outputs if o["type"] == "trial_result"]
    trig_err, imu_err, onset_err, pre_err, motor_err, missed = [], [], [], [], [], 0
    for res in results:
        # match by time: the nearest true trial
        k = min(
            true_trials, key=lambda i: abs(true_trials[i]["motion_onset_t_s"] - res["stimulus_s"])
        )
        tt = true_trials[k]
        trig_err.append((res["stimulus_s"] - tt["t_s"]) * 1e3)
        if "imu" in res["cross_check"]:
            imu_err.append((res["cross_check"]["imu"]["onset_s"] - tt["motion_onset_t_s"]) * 1e3)
        for m in res["muscles"]:
            tm = muscle.get((k, m["channel"]))
            if tm is None:
                continue
            if not m["detected"]:
                missed += 1
                continue
            onset_err.append((m["onset_s"] - tm["t_s"]) * 1e3)
            pre_err.append(m["premotor_ms"] - (tm["t_s"] - tt["motion_onset_t_s"]) * 1e3)
            if m["motor_ms"] is not None and k in force:
                motor_err.append(m["motor_ms"] - (force[k]["t_s"] - tm["t_s"]) * 1e3)
    _emit("trials_detected", len(results), "trials", truth=len(true_trials))
    for name, trial_errs in (
        ("trigger_onset", trig_err),
        ("imu_onset", imu_err),
        ("emg_onset", onset_err),
        ("premotor_time", pre_err),
        ("motor_time", motor_err),
    ):
        a = np.abs(np.array(trial_errs)) if trial_errs else np.array([np.nan])
        _emit(
            f"{name}_mae",
            float(np.mean(a)),
            "ms",
            n=len(trial_errs),
            p95=round(float(np.percentile(a, 95)), 3),
        )
    _emit("emg_onsets_missed", missed, "onsets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
