"""Compile (or load from numba's on-disk cache) every hot kernel before the daemon says it is
ready: a first compile inside the event loop stalls it for seconds (the silence watchdog
then declares every device lost). The public entry points are called on tiny inputs, so
each kernel is compiled for exactly the argument types the pipeline uses."""

from __future__ import annotations

import logging
import sys
import time

import numpy as np

log = logging.getLogger("nmcore.runtime.warmup")

__all__ = ["kernel_signatures", "warm_kernels"]


def warm_kernels() -> float:
    from nmcore.buffer.ring import RingBuffer
    from nmcore.buffer.ring import _warm as warm_ring
    from nmcore.clock import ClockModel, TickUnwrapper
    from nmcore.detect.cop import cop_from_six_axis
    from nmcore.detect.emg import EmgOnsetDetector
    from nmcore.detect.perturbation import _warm as warm_perturbation
    from nmcore.detect.perturbation import motion_onset, rising_edges_in
    from nmcore.detect.sway import sway_measures
    from nmcore.dsp import SosFilter, butter_sos

    t0 = time.perf_counter()
    # every module's own list first: a kernel added to a facade is warmed where it is added
    # (the live view's `ring_bin_means` was not: compiled inside the loop, a 0.57 s stall)
    warm_ring()
    warm_perturbation()
    rng = np.random.default_rng(0)
    # enough observations over enough time for every fit path (bins, slope, envelope)
    for window_s in (1.0, 60.0):
        clock = ClockModel(window_s=window_s, nominal_rate_hz=1000.0, min_fit_span_s=0.5)
        unwrap = TickUnwrapper(32, 1e6)
        for i in range(400):
            clock.observe(unwrap.seconds(i * 10_000) + 0.01, i * 0.01 + 0.0105)
        clock.to_host_array(np.arange(8.0) * 0.001)
        clock.to_host_grid(0.5, 0.001, np.empty(8))
    # several packets per batch (BLE / USB bursts): compiles the batch-bracket kernel too
    clock = ClockModel(window_s=60.0, nominal_rate_hz=1000.0, min_fit_span_s=0.5)
    for k in range(200):
        for j in range(4):
            clock.observe(0.03 * k + 0.008 * j, 0.03 * k + 0.031)
    clock.observe_block(6.0, 0.001, 3, 4, 11, 6.05, np.empty(12))  # the pipeline's call
    clock.to_host_array(np.arange(8.0) * 0.001)
    SosFilter(butter_sos(2, 10.0, 100.0, "lowpass"), 2).process(np.zeros((4, 2)))
    det = EmgOnsetDetector(1000.0, 2)
    x = rng.standard_normal((1200, 2))
    x[900:] *= 30.0  # a burst, so the onset look-back and burst metrics run too
    det.process(x[:600])
    det.arm(600)
    det.process(x[600:])
    det.finish()
    det.results()
    # the pipeline's fused push + EMG chain (its own compiled copy of the chain)
    from nmcore.detect._emg_kernels import clipped_any
    from nmcore.runtime._ingest_kernels import ingest_push_chain, state_table

    fused = EmgOnsetDetector(1000.0, 2)
    ring = RingBuffer(2, 64)
    table = state_table(*ring.state, fused.work, fused.istate, fused.hist)
    ingest_push_chain(table, 0, x[:8].copy(), np.arange(8.0))
    # a trial's clipping check runs once per trial close: loaded inside the loop otherwise
    # (the daemon's largest stall after ready, 27-40 ms)
    clipped_any(np.ascontiguousarray(x[:16]), 3)
    y = rng.standard_normal((600, 3))
    y[400:, 0] += np.linspace(0, 20, 200)
    motion_onset(y, 1000.0, 300)
    rising_edges_in(y, 0, 0.5, 0.0)  # the trigger scan, every trigger block
    # 12 s at 100 Hz: longer than a Welch segment, so the spectral kernel runs
    cop = cop_from_six_axis(*(np.full(1200, v) for v in (1.0, 1.0, 700.0, 1.0, 1.0)))
    noise = rng.normal(0, 1e-3, (1200, 2))
    sway_measures(cop.ap_m + noise[:, 0], cop.ml_m + noise[:, 1], 100.0)
    elapsed_s = time.perf_counter() - t0
    log.debug("kernels warm in %.2f s", elapsed_s)
    return elapsed_s


def kernel_signatures() -> dict[str, int]:
    """Every jitted function of nmcore and its drivers imported so far -> how many compiled
    signatures it has. Two snapshots tell which kernels compiled in between (a kernel first
    called after ready is compiled, or loaded, inside the event loop)."""
    from numba.core.dispatcher import Dispatcher

    out: dict[str, int] = {}
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not mod_name.startswith(("nmcore.", "nmcore_drivers.")):
            continue
        for attr, obj in list(vars(mod).items()):
            if isinstance(obj, Dispatcher) and obj.py_func.__module__ == mod_name:
                out[f"{mod_name}.{attr}"] = len(obj.signatures)
    return out
