"""BLE end to end: real bleak + fake BlueZ + emulated Polar H10 -> polar.pmd driver -> clock
model, and the PMD decoder's cost.

Usage: .venv/bin/python benchmarks/bench_ble.py [--smoke] [--duration-s S] [--trace]

1. Sample-time accuracy. A private dbus-daemon stands in for the system bus; the fake BlueZ
   (tests/fakebluez) plays an H10 with 30 ms connection-interval batching and a device clock
   100 ppm fast. The polar.pmd driver streams ECG (130 Hz, 73 samples/frame) and ACC (200 Hz,
   36 samples/frame) through real bleak for `duration_s` (40 s; --smoke 8 s). Every block
   goes through nmcore.clock as the runtime's pipeline does (TickUnwrapper on the 64-bit ns
   timestamp of the frame's last sample, one ClockModel per device, `observe` then
   `to_host_array`). Sample times after SETTLE_S (10 s; --smoke 4 s) are compared with the
   emulator's truth (when each sample was taken, host clock): p50/p99/max |error| in ms.
   Baseline: the arrival time of the frame for its last sample, earlier samples back-filled
   at the nominal period (what a driver without a clock model does). Next to it, the
   observable floor: for each sample, the lowest (arrival - true time of the frame's last
   sample) over the frames received so far, i.e. the error of an arrival-only estimator
   that knew the drift exactly; an upper-envelope-only model cannot do better. And the grid
   oracle (`GridOracle`): exact connection events, no host path, the minimax middle of every
   (offset, drift) consistent with all frames so far; its bracket width is what the data
   cannot resolve, so no estimator can promise less than half of it (its own p99 on a run
   is not a bound: another estimator can land closer by chance). `--trace` writes one
   JSON line per frame to stderr (arrival delay, the model's error, its drift).
2. Phase sweep: the same frames against 12 phases of the event grid (3 with --smoke), no BLE
   stack, model and oracle p99 (median/min/max over phases): how much item 1 depends on
   where the central put its connection events.
3. Decoder cost per frame: the numba delta kernel against a plain numpy decoder (unpackbits
   per block) on the same Verity-style ACC frames; raw 24-bit ECG frames vectorised against a
   per-sample `int.from_bytes` loop.

The truth includes the whole host path (D-Bus daemon, two D-Bus hops, the event loop), so
the error contains the fixed minimum latency the clock model cannot see (see nmcore.clock).
One JSON object per figure on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from nmcore.clock import ClockModel, TickUnwrapper
from nmcore.model import SampleBlock
from nmcore_drivers.polar import _kernels as pk
from nmcore_drivers.polar.pmd import PmdDecoder

_FAKE_DIR = Path(__file__).resolve().parents[1] / "tests" / "fakebluez"


def load_fakebluez() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "fakebluez", _FAKE_DIR / "__init__.py", submodule_search_locations=[str(_FAKE_DIR)]
    )
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fakebluez"] = mod
    spec.loader.exec_module(mod)
    return mod


def figure(name: str, value: float, unit: str, base_name: str, base: float) -> dict[str, Any]:
    return {
        "name": name,
        "value": round(value, 4),
        "unit": unit,
        "baseline": {"name": base_name, "value": round(base, 4)},
        "ratio": round(value / base, 4) if base > 0 else None,
    }


class GridOracle:
    """What the frames themselves pin down, to read the clock model's figure against: it
    knows the exact connection-event grid (no host path at all, no grid to infer) and that
    each frame left at the first event after its last sample, i.e. truth(x_last) in
    (event - interval, event]. The lines host = c + (1 + s) x consistent with every frame so
    far (|s| <= `max_drift_ppm`, the model's limit) form a convex polygon in (c, s), kept
    exactly by clipping with two half-planes per frame. For a sample at device time x the
    feasible host times are [min, max] of c + (1 + s) x over the polygon's vertices: the
    width of that bracket is what the data cannot resolve (truths that far apart gave the
    same frames, so no estimator can promise less than half of it), and the oracle answers
    its middle (the minimax choice; its actual error on one run is not a bound: another
    estimator can land closer by chance)."""

    def __init__(self, interval_s: float, max_drift_ppm: float = 300.0) -> None:
        self._interval_s = interval_s
        self._s_max = max_drift_ppm * 1e-6
        self._poly: npt.NDArray[np.float64] | None = None  # vertices (k, 2): c, s

    def _clip(self, a: float, b: float, r: float) -> None:
        """Keep the part of the polygon where a c + b s <= r (Sutherland-Hodgman)."""
        poly = self._poly
        assert poly is not None
        d = a * poly[:, 0] + b * poly[:, 1] - r
        out: list[npt.NDArray[np.float64]] = []
        for k in range(poly.shape[0]):
            p, q = poly[k], poly[(k + 1) % poly.shape[0]]
            dp, dq = d[k], d[(k + 1) % poly.shape[0]]
            if dp <= 0.0:
                out.append(p)
            if (dp < 0.0 < dq) or (dq < 0.0 < dp):
                out.append(p + (q - p) * (dp / (dp - dq)))
        if len(out) < 3:
            raise RuntimeError("no line fits every frame: the oracle's premise is broken")
        self._poly = np.array(out)

    def add_frame(self, x_last_s: float, event_s: float) -> None:
        lo, hi = event_s - self._interval_s - x_last_s, event_s - x_last_s  # c + s x in [lo, hi]
        if self._poly is None:
            # a box that surely holds the first frame's strip, |s| <= s_max
            m = self._s_max * abs(x_last_s) + 1.0
            sm = self._s_max
            self._poly = np.array([[lo - m, -sm], [hi + m, -sm], [hi + m, sm], [lo - m, sm]])
        self._clip(1.0, x_last_s, hi)
        self._clip(-1.0, -x_last_s, -lo)

    def bracket(self, x_s: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], ...]:
        """Earliest and latest feasible host times of device times `x_s` (exact)."""
        assert self._poly is not None
        v = self._poly[:, :1] + self._poly[:, 1:] * x_s[None, :] + x_s[None, :]
        return v.min(axis=0), v.max(axis=0)

    def estimate(self, x_s: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], float]:
        """Minimax host times of `x_s` and the bracket width at the last one (s)."""
        lo, hi = self.bracket(x_s)
        return 0.5 * (lo + hi), float(hi[-1] - lo[-1])


async def stream_h10(
    fb: ModuleType,
    address: str,
    duration_s: float,
    ecg_per_frame: int = 73,
    acc_per_frame: int = 36,
) -> tuple[Any, list[SampleBlock]]:
    fake = await fb.FakeBluez(address).start()
    try:
        h10, blocks = await fb.stream_h10_blocks(
            fake, duration_s, ecg_per_frame=ecg_per_frame, acc_per_frame=acc_per_frame
        )
        return h10, blocks
    finally:
        await fake.stop()


def timing_figures(
    h10: Any, blocks: list[SampleBlock], settle_s: float, trace: bool = False
) -> list[dict[str, Any]]:
    rates = {"h10.ecg": 130, "h10.acc": 200}
    meas = {"h10.ecg": 0, "h10.acc": 2}
    model = ClockModel(window_s=60.0, nominal_rate_hz=130.0)
    unwrap = {sid: TickUnwrapper(64, 1e9) for sid in rates}
    first = {sid: next(b for b in blocks if b.stream_id == sid) for sid in rates}
    truth = {sid: h10.truth[meas[sid]] for sid in rates}
    event_of = {
        sid: dict(zip((k for k, _ in truth[sid].delivered), truth[sid].event_s, strict=True))
        for sid in rates
    }
    k0 = {sid: truth[sid].delivered[0][0] for sid in rates}
    t_start = blocks[0].arrival_s
    host_path: list[float] = []
    floor_s = np.inf
    floor_t: list[float] = []
    model_t: list[npt.NDArray[np.float64]] = []
    base_t: list[npt.NDArray[np.float64]] = []
    true_t: list[npt.NDArray[np.float64]] = []
    oracle = GridOracle(h10.conn_interval_s)
    oracle_t: list[npt.NDArray[np.float64]] = []
    oracle_width_ms: list[float] = []
    for b in blocks:
        sid = b.stream_id
        rate = rates[sid]
        n = b.n_samples
        back = (n - 1 - np.arange(n)) / rate
        assert b.device_ticks is not None
        dev_t = unwrap[sid].seconds(b.device_ticks) - back
        model.observe(float(dev_t[-1]), b.arrival_s)
        host_t = model.to_host_array(dev_t)
        k = k0[sid] + (b.counter - first[sid].counter) + np.arange(n, dtype=np.int64)
        host_path.append(b.arrival_s - event_of[sid][int(k[0])])
        true_k = h10.host_time_s(k, rate)
        floor_s = min(floor_s, b.arrival_s - float(true_k[-1]))
        # the emulator's device seconds of these samples (the grid host_time_s maps)
        dev_k = (k * 10**9 // rate).astype(np.float64) / 1e9
        oracle.add_frame(float(dev_k[-1]), event_of[sid][int(k[0])])
        if trace:
            rec = {
                "t_s": round(b.arrival_s - t_start, 4),
                "stream": sid,
                "arrival_delay_ms": round((b.arrival_s - float(true_k[-1])) * 1e3, 3),
                "model_err_ms": round((float(host_t[-1]) - float(true_k[-1])) * 1e3, 3),
                "floor_so_far_ms": round(floor_s * 1e3, 3),
                "drift_ppm": round(model.drift_ppm, 2),
                "discontinuities": model.discontinuities,
            }
            print(json.dumps(rec), file=sys.stderr)
        if b.arrival_s - t_start >= settle_s:
            model_t.append(host_t)
            base_t.append(b.arrival_s - back)
            true_t.append(true_k)
            floor_t.extend([floor_s] * n)
            o_t, o_w = oracle.estimate(dev_k)
            # the truth is feasible by construction: a failure here is a bug in the oracle
            o_lo, o_hi = oracle.bracket(dev_k)
            assert np.all((o_lo - 1e-6 <= true_k) & (true_k <= o_hi + 1e-6)), "truth outside"
            oracle_t.append(o_t)
            oracle_width_ms.append(o_w * 1e3)
    hm, hb, ht = (np.concatenate(x) for x in (model_t, base_t, true_t))
    # the fastest trip from the emulated radio through D-Bus and bleak to the driver: a fixed
    # latency that only a time-sync exchange could measure (PMD has none)
    lat_min_s = float(np.min(host_path))
    label = f"h10_30ms_100ppm_after_{settle_s:g}s"
    base = "arrival_backfilled"
    figs = []
    for suffix, shift_s in (("", 0.0), ("_beyond_min_host_latency", lat_min_s)):
        em = np.abs(hm - (ht + shift_s)) * 1e3
        eb = np.abs(hb - (ht + shift_s)) * 1e3
        for stat, q in (("p50", 50.0), ("p99", 99.0), ("max", 100.0)):
            figs.append(
                figure(
                    f"{label}_sample_time_err{suffix}_{stat}",
                    float(np.percentile(em, q)),
                    "ms",
                    base,
                    float(np.percentile(eb, q)),
                )
            )
    hp = np.array(host_path) * 1e3
    em = np.abs(hm - ht) * 1e3
    eo = np.abs(np.concatenate(oracle_t) - ht) * 1e3
    for stat, q in (("p50", 50.0), ("p99", 99.0), ("max", 100.0)):
        figs.append(
            figure(
                f"{label}_grid_oracle_err_{stat}",
                float(np.percentile(eo, q)),
                "ms",
                "clock_model_sample_time_err",
                float(np.percentile(em, q)),
            )
        )
    figs.append(
        figure(
            f"{label}_grid_oracle_bracket_width_median",
            float(np.median(oracle_width_ms)),
            "ms",
            "emulator_conn_interval",
            h10.conn_interval_s * 1e3,
        )
    )
    for stat, q in (("p50", 50.0), ("p99", 99.0)):
        figs.append(
            figure(
                f"{label}_observable_floor_{stat}",
                float(np.percentile(np.asarray(floor_t) * 1e3, q)),
                "ms",
                "clock_model_sample_time_err",
                float(np.percentile(em, q)),
            )
        )
    figs += [
        {
            "name": "fake_host_path_latency_min",
            "value": round(float(hp.min()), 3),
            "unit": "ms",
            "baseline": None,
            "ratio": None,
        },
        {
            "name": "fake_host_path_latency_p50",
            "value": round(float(np.median(hp)), 3),
            "unit": "ms",
            "baseline": None,
            "ratio": None,
        },
        {
            "name": f"{label}_samples_compared",
            "value": int(hm.shape[0]),
            "unit": "samples",
            "baseline": None,
            "ratio": None,
        },
        {
            "name": "clock_model_discontinuities",
            "value": model.discontinuities,
            "unit": "count",
            "baseline": None,
            "ratio": None,
        },
        {
            # the connection interval the model inferred from the arrivals (None: the
            # event-grid bracket was not in use at the end)
            "name": "clock_model_event_interval",
            "value": model.stats(blocks[-1].arrival_s).event_interval_ms,
            "unit": "ms",
            "baseline": {"name": "emulator_conn_interval", "value": h10.conn_interval_s * 1e3},
            "ratio": None,
        },
        {
            "name": "clock_model_drift_estimate",
            "value": round(model.drift_ppm, 2),
            "unit": "ppm",
            "baseline": {"name": "emulator_truth", "value": round(1e6 / (1 + h10.drift) - 1e6, 2)},
            "ratio": None,
        },
    ]
    return figs


def phase_sweep_figures(
    n_phases: int, duration_s: float, settle_s: float, ecg_per_frame: int, acc_per_frame: int
) -> list[dict[str, Any]]:
    """The H10's frames against the connection events over `n_phases` phases of the event
    grid (no BLE stack: arrival = event + 0.4 ms + an exponential 0.3 ms host path), for
    the clock model and the grid oracle: how much the figure above depends on where the
    central happened to put its connection events, and what is reachable at all."""
    interval_s, drift = 0.030, 100e-6
    rng = np.random.default_rng(11)
    model_p99: list[float] = []
    oracle_p99: list[float] = []
    for phase_s in np.arange(n_phases) * interval_s / n_phases:
        frames = []
        for rate, per in ((130, ecg_per_frame), (200, acc_per_frame)):
            k = np.arange(per - 1, int(duration_s * rate), per, dtype=np.int64)
            x = (k * 10**9 // rate).astype(np.float64) / 1e9
            t = x / (1.0 + drift)
            event = phase_s + np.ceil((t - phase_s) / interval_s) * interval_s
            frames += [(float(e), int(kk), rate, per) for e, kk in zip(event, k, strict=True)]
        frames.sort()
        model = ClockModel(window_s=60.0, nominal_rate_hz=130.0)
        oracle = GridOracle(interval_s)
        em: list[npt.NDArray[np.float64]] = []
        eo: list[npt.NDArray[np.float64]] = []
        for event_s, k_last, rate, per in frames:
            kk = np.arange(k_last - per + 1, k_last + 1, dtype=np.int64)
            x = (kk * 10**9 // rate).astype(np.float64) / 1e9
            truth = x / (1.0 + drift)
            model.observe(float(x[-1]), event_s + 0.0004 + rng.exponential(0.0003))
            oracle.add_frame(float(x[-1]), event_s)
            if event_s >= settle_s:
                em.append(np.abs(model.to_host_array(x) - truth))
                eo.append(np.abs(oracle.estimate(x)[0] - truth))
        model_p99.append(1e3 * float(np.percentile(np.concatenate(em), 99)))
        oracle_p99.append(1e3 * float(np.percentile(np.concatenate(eo), 99)))
    label = f"h10_30ms_100ppm_after_{settle_s:g}s_phase_sweep_{n_phases}"
    return [
        figure(
            f"{label}_p99_{stat}_over_phases",
            float(fn(model_p99)),
            "ms",
            "grid_oracle",
            float(fn(oracle_p99)),
        )
        for stat, fn in (("median", np.median), ("max", np.max), ("min", np.min))
    ]


def numpy_delta(payload: bytes, start: int, channels: int, ref_bits: int) -> npt.NDArray[np.int64]:
    buf = np.frombuffer(payload, dtype=np.uint8)
    rb = (ref_bits + 7) // 8
    ref = buf[start : start + channels * rb].reshape(channels, rb).astype(np.int64)
    ref_v = (ref << (8 * np.arange(rb))).sum(axis=1)
    s = 1 << (8 * rb - 1)
    rows = [((ref_v ^ s) - s)[None, :]]
    pos = start + channels * rb
    while pos < buf.shape[0]:
        bits, count = int(buf[pos]), int(buf[pos + 1])
        pos += 2
        nb = (bits * count * channels + 7) // 8
        bitarr = np.unpackbits(buf[pos : pos + nb], bitorder="little")[: bits * count * channels]
        v = (bitarr.reshape(-1, bits).astype(np.int64) << np.arange(bits)).sum(axis=1)
        sg = 1 << (bits - 1)
        rows.append(((v ^ sg) - sg).reshape(count, channels))
        pos += nb
    return np.cumsum(np.concatenate(rows), axis=0)


def decode_figures(fb: ModuleType, n_frames: int) -> list[dict[str, Any]]:
    enc = sys.modules["fakebluez.pmd_encode"]
    rng = np.random.default_rng(7)
    walk = np.cumsum(rng.integers(-40, 40, size=(36, 3)), axis=0) + 1000
    frame = enc.encode_compressed(2, 10**15, 1, walk, 16, block_len=12)
    buf = np.frombuffer(frame, dtype=np.uint8)
    out = np.empty((512, 3), np.int64)
    pk.delta_decode(buf, 10, 3, 16, out)  # compile outside the timing
    t0 = time.perf_counter()
    for _ in range(n_frames):
        pk.delta_decode(np.frombuffer(frame, dtype=np.uint8), 10, 3, 16, out)
    t_kernel = (time.perf_counter() - t0) / n_frames
    t0 = time.perf_counter()
    for _ in range(n_frames):
        numpy_delta(frame, 10, 3, 16)
    t_numpy = (time.perf_counter() - t0) / n_frames

    ecg = enc.encode_raw(0, 10**15, 0, rng.integers(-3000, 3000, size=73), 3)
    dec = PmdDecoder()
    t0 = time.perf_counter()
    for _ in range(n_frames):
        dec.decode(ecg)
    t_vec = (time.perf_counter() - t0) / n_frames
    t0 = time.perf_counter()
    for _ in range(n_frames):
        body = ecg[10:]
        [int.from_bytes(body[i : i + 3], "little", signed=True) for i in range(0, len(body), 3)]
    t_loop = (time.perf_counter() - t0) / n_frames
    return [
        figure(
            "pmd_delta_frame_decode_acc36",
            t_kernel * 1e6,
            "us/frame",
            "numpy_unpackbits",
            t_numpy * 1e6,
        ),
        figure(
            "pmd_raw_ecg73_frame_decode_full",
            t_vec * 1e6,
            "us/frame",
            "python_int_from_bytes_loop_values_only",
            t_loop * 1e6,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--duration-s", type=float, default=None)
    parser.add_argument("--ecg-per-frame", type=int, default=73, help="H10 at MTU 232: 73")
    parser.add_argument("--acc-per-frame", type=int, default=36, help="H10 at MTU 232: 36")
    parser.add_argument("--trace", action="store_true", help="per-frame JSON lines on stderr")
    args = parser.parse_args()
    duration_s = args.duration_s or (8.0 if args.smoke else 40.0)
    settle_s = 4.0 if args.smoke else 10.0
    fb = load_fakebluez()
    if not fb.dbus_daemon_available():
        print(json.dumps({"name": "skipped", "value": None, "unit": "dbus-daemon missing"}))
        return
    with fb.PrivateBus() as bus:
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = bus.address
        h10, blocks = asyncio.run(
            stream_h10(fb, bus.address, duration_s, args.ecg_per_frame, args.acc_per_frame)
        )
    for fig in timing_figures(h10, blocks, settle_s, args.trace):
        print(json.dumps(fig))
    n_phases = 3 if args.smoke else 12
    for fig in phase_sweep_figures(
        n_phases, duration_s, settle_s, args.ecg_per_frame, args.acc_per_frame
    ):
        print(json.dumps(fig))
    for fig in decode_figures(fb, 300 if args.smoke else 3000):
        print(json.dumps(fig))


if __name__ == "__main__":
    main()
