"""Ring buffer and sequence tracker per-block costs, called from Python as the runtime does.

Figures (one JSON object per line; `ratio` = value / baseline, higher is better for us):
- ring_push_16ch_32: RingBuffer.push of 32-sample x 16-channel blocks, facade included,
  in channel-samples/s, against a plain-numpy ring that writes with slices.
- ring_push_kernel_16ch_32: the jitted push alone (no facade), same baseline.
- ring_latest_16ch_256: RingBuffer.latest(256) reads per second, against numpy fancy indexing.
- ring_window_by_time_16ch_256: window_by_time over 256 samples of a 20 000-sample ring,
  against np.searchsorted on an unwrapped copy of the times.
- ring_bin_means_16ch_80_rms: RingBuffer.bin_means(8 bins, RMS) of the newest 80 samples,
  what the daemon's live view publishes per EMG message (25/s), against the window copy +
  np.nanmean it replaced.
- sequence_admit: SequenceTracker.admit packets/s, against a bare inline modular-difference
  loop (a lower bound on any tracker: no object, no classification, no result).

Rates are per core: each run is timed with the thread's CPU time (`time.thread_time`), so
time the scheduler gives to other users of the shared machine is not charged; each figure is
the best of several repeats, push figures interleaved so drift hits all three alike.
Usage: python benchmarks/bench_ring.py [--smoke]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from nmcore.buffer import RingBuffer, SequenceTracker
from nmcore.buffer import _kernels as k

F64 = npt.NDArray[np.float64]
N_CHANNELS = 16
BLOCK = 32
RATE_HZ = 2000.0
HISTORY_S = 10.0


class NumpySliceRing:
    """The naive baseline: the same ring semantics written with numpy slices in Python."""

    def __init__(self, n_channels: int, capacity: int) -> None:
        self.capacity = capacity
        self.data = np.full((capacity, n_channels), np.nan)
        self.t_s = np.full(capacity, np.nan)
        self.valid = np.zeros(capacity, dtype=np.uint8)
        self.head = 0

    def _fill(self, first: int, data: F64 | float, t_s: F64 | float, valid: int) -> None:
        n = len(data) if isinstance(data, np.ndarray) else 0
        slot = first % self.capacity
        end = slot + n
        if end <= self.capacity:
            self.data[slot:end] = data
            self.t_s[slot:end] = t_s
            self.valid[slot:end] = valid
        else:
            cut = self.capacity - slot
            assert isinstance(data, np.ndarray)
            assert isinstance(t_s, np.ndarray)
            self.data[slot:] = data[:cut]
            self.data[: end - self.capacity] = data[cut:]
            self.t_s[slot:] = t_s[:cut]
            self.t_s[: end - self.capacity] = t_s[cut:]
            self.valid[slot:] = valid
            self.valid[: end - self.capacity] = valid

    def push(self, first_index: int, data: F64, t_s: F64) -> tuple[int, int, int]:
        gap = max(0, first_index - self.head)
        if gap:
            n_gap = min(gap, self.capacity)
            nan_rows = np.full((n_gap, self.data.shape[1]), np.nan)
            self._fill(first_index - n_gap, nan_rows, np.full(n_gap, np.nan), 0)
        rejected = max(0, min(len(data), self.head - first_index))
        self._fill(first_index + rejected, data[rejected:], t_s[rejected:], 1)
        self.head = max(self.head, first_index + len(data))
        return len(data) - rejected, gap, rejected

    def latest(self, n: int) -> tuple[F64, F64, npt.NDArray[np.bool_]]:
        idx = np.arange(self.head - n, self.head) % self.capacity
        return self.data[idx], self.t_s[idx], self.valid[idx] == 1


def best_rate(fn: Callable[[int], None], n_ops: int, repeats: int) -> float:
    """Best ops/s of `repeats` runs of `fn(n_ops)`."""
    best = 0.0
    for _ in range(repeats):
        t0 = time.thread_time()
        fn(n_ops)
        elapsed = time.thread_time() - t0
        best = max(best, n_ops / elapsed)
    return best


def emit(name: str, value: float, unit: str, base_name: str, base_value: float) -> None:
    print(
        json.dumps(
            {
                "name": name,
                "value": round(value, 1),
                "unit": unit,
                "baseline": {"name": base_name, "value": round(base_value, 1)},
                "ratio": round(value / base_value, 2),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="tiny run that finishes in seconds")
    args = parser.parse_args()
    n_blocks = 2_000 if args.smoke else 100_000
    repeats = 2 if args.smoke else 5

    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((BLOCK, N_CHANNELS)) for _ in range(64)]
    times = [np.arange(BLOCK, dtype=np.float64) / RATE_HZ for _ in range(64)]

    ring = RingBuffer.for_history(N_CHANNELS, RATE_HZ, HISTORY_S)
    naive = NumpySliceRing(N_CHANNELS, ring.capacity)
    kernel_state = RingBuffer.for_history(N_CHANNELS, RATE_HZ, HISTORY_S).state

    def run_ring(n: int) -> None:
        push = ring.push
        first = ring.head
        for i in range(n):
            push(first, blocks[i & 63], times[i & 63])
            first += BLOCK

    def run_kernel(n: int) -> None:
        data, t_s, valid, meta = kernel_state
        push = k.ring_push
        first = int(meta[k.META_HEAD])
        for i in range(n):
            push(data, t_s, valid, meta, first, blocks[i & 63], times[i & 63])
            first += BLOCK

    def run_naive(n: int) -> None:
        push = naive.push
        first = naive.head
        for i in range(n):
            push(first, blocks[i & 63], times[i & 63])
            first += BLOCK

    for fn in (run_ring, run_kernel, run_naive):  # compile / load from cache, warm caches
        fn(100)
    push_rates = {"ring": 0.0, "kernel": 0.0, "naive": 0.0}
    for _ in range(repeats):  # interleaved so drift hits all three alike
        push_rates["ring"] = max(push_rates["ring"], best_rate(run_ring, n_blocks, 1))
        push_rates["kernel"] = max(push_rates["kernel"], best_rate(run_kernel, n_blocks, 1))
        push_rates["naive"] = max(push_rates["naive"], best_rate(run_naive, n_blocks, 1))
    per_block = BLOCK * N_CHANNELS
    emit(
        "ring_push_16ch_32",
        push_rates["ring"] * per_block,
        "channel-samples/s",
        "numpy_slice_ring_push",
        push_rates["naive"] * per_block,
    )
    emit(
        "ring_push_kernel_16ch_32",
        push_rates["kernel"] * per_block,
        "channel-samples/s",
        "numpy_slice_ring_push",
        push_rates["naive"] * per_block,
    )

    # Reads: the look-back a detector does after each block.
    n_reads = n_blocks // 4

    def run_latest(n: int) -> None:
        for _ in range(n):
            ring.latest(256)

    def run_naive_latest(n: int) -> None:
        for _ in range(n):
            naive.latest(256)

    run_latest(10)
    latest_rate = best_rate(run_latest, n_reads, repeats)
    naive_latest_rate = best_rate(run_naive_latest, n_reads, repeats)
    emit(
        "ring_latest_16ch_256",
        latest_rate,
        "reads/s",
        "numpy_fancy_index_latest",
        naive_latest_rate,
    )

    # Give the ring real times so the time search has something to find.
    timed = RingBuffer.for_history(N_CHANNELS, RATE_HZ, HISTORY_S)
    n_fill = timed.capacity + 1000
    all_t = np.arange(n_fill, dtype=np.float64) / RATE_HZ
    timed.push(0, rng.standard_normal((n_fill, N_CHANNELS)), all_t)
    t_end = float(all_t[-1])
    t0_s, t1_s = t_end - 0.5, t_end - 0.5 + 256 / RATE_HZ

    def run_by_time(n: int) -> None:
        for _ in range(n):
            timed.window_by_time(t0_s, t1_s)

    def run_naive_by_time(n: int) -> None:
        cap = timed.capacity
        for _ in range(n):
            # unwrap, then search: what a reader without a kernel would do
            head = timed.head
            idx = np.arange(head - cap, head) % cap
            t_lin = timed.t_s[idx]
            a, b = np.searchsorted(t_lin, [t0_s, t1_s])
            sel = idx[a:b]
            _ = (timed.data[sel], timed.t_s[sel], timed.valid[sel] == 1)

    run_by_time(10)
    by_time_rate = best_rate(run_by_time, n_reads, repeats)
    naive_by_time_rate = best_rate(run_naive_by_time, max(n_reads // 20, 50), repeats)
    emit(
        "ring_window_by_time_16ch_256",
        by_time_rate,
        "reads/s",
        "numpy_unwrap_searchsorted",
        naive_by_time_rate,
    )

    # The live view's decimation: 80 samples (40 ms at 2 kHz) into 8 RMS bins.
    def run_bins(n: int) -> None:
        head = timed.head
        for _ in range(n):
            timed.bin_means(head - 80, head, 8, rms=True)

    def run_naive_bins(n: int) -> None:
        head = timed.head
        for _ in range(n):
            w = timed.window_by_index(head - 80, head)
            x = w.data.reshape(8, 10, -1)
            np.sqrt(np.nanmean(x * x, axis=1))
            float(np.nanmean(w.t_s[:10]))

    run_bins(10)
    emit(
        "ring_bin_means_16ch_80_rms",
        best_rate(run_bins, n_reads, repeats),
        "reads/s",
        "window_copy_numpy_nanmean",
        best_rate(run_naive_bins, max(n_reads // 5, 50), repeats),
    )

    # Sequence tracking: one admit per packet, a 16-bit counter wrapping every 2048 packets.
    def run_admit(n: int) -> None:
        tracker = SequenceTracker(16)
        admit = tracker.admit
        raw = 0
        for _ in range(n):
            admit(raw, BLOCK)
            raw = (raw + BLOCK) & 0xFFFF

    def run_naive_admit(n: int) -> None:
        expected = 0
        index = 0
        raw = 0
        missing = 0
        for _ in range(n):
            delta = (raw - expected + 0x8000) % 0x10000 - 0x8000
            if delta > 0:
                missing += delta
            index += delta + BLOCK
            expected = (raw + BLOCK) & 0xFFFF
            raw = (raw + BLOCK) & 0xFFFF

    admit_rate = best_rate(run_admit, n_blocks, repeats)
    naive_admit_rate = best_rate(run_naive_admit, n_blocks, repeats)
    emit(
        "sequence_admit", admit_rate, "packets/s", "bare_modular_loop_lower_bound", naive_admit_rate
    )


if __name__ == "__main__":
    main()
