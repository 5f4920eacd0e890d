"""Device sample counters to absolute sample indices, with every lost sample counted.

A device numbers its samples with a counter that wraps at 2**counter_bits. The tracker maps
each packet's raw counter to an absolute, ever-increasing sample index and classifies the
packet against what it expected next:

- ok: the counter is the expected one.
- gap: a forward jump of less than half the counter range; exactly that many samples were
  lost (a jump by half the range or more reads as backwards: modular arithmetic cannot tell).
- duplicate: the packet, or its leading part, was already received (retransmission, overlap);
  those samples are dropped and counted.
- out_of_order: a late packet whose samples were already counted missing. The stream has moved
  on (the ring refuses indices behind its head), so they stay missing; the packet is counted.
- reset: a backward jump of more than `reset_threshold` samples (a device restarting its
  counter), or a forward jump above `max_gap` when one is given. The packet is placed right
  after the previous one and the mapping restarts from its counter; the runtime may call
  `resync` with a better estimate from the clock before admitting the next packet.

Pure Python: one call per packet, no per-sample work.
"""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_RESET_THRESHOLD",
    "Admission",
    "AdmissionKind",
    "SequenceTotals",
    "SequenceTracker",
    "contiguous_runs",
]

AdmissionKind = Literal["ok", "gap", "duplicate", "out_of_order", "reset"]

# Reordering over BLE or USB serial delays a packet by a few packets (tens of samples);
# a counter falling back by more than this (half a second at 2 kHz) is a restart, not a
# late packet. Small counters are capped at a quarter of their range, see `_threshold_for`.
DEFAULT_RESET_THRESHOLD = 1024

# Missing ranges are remembered only to tell a late packet from a duplicate; a burst of
# losses longer than this forgets the oldest, which then read as duplicates if they arrive.
_MAX_UNSEEN_RANGES = 256


class Admission(NamedTuple):
    """Where one packet goes.

    Keep `data[skip : skip + n_keep]` at absolute indices starting at `first_index`
    (`first_index` is the packet's own start plus `skip`). `gap_samples`: samples lost
    between the previous packet and this one (exact; 0 unless `kind == "gap"`).

    A NamedTuple, not a frozen dataclass: one is built per packet, and a frozen dataclass
    costs ~1 µs to build (a setattr per field), three times a tuple.
    """

    first_index: int
    skip: int
    n_keep: int
    gap_samples: int
    kind: AdmissionKind


@dataclass(frozen=True, slots=True)
class SequenceTotals:
    """Running counts since construction.

    `missing_samples`: samples counted lost from counter gaps (exact; late arrivals do not
    reduce it because they never reach the stream). `duplicate_samples`: samples received
    again and dropped. `late_samples`: samples of out-of-order packets (already counted
    missing). `resync_skipped_samples`: indices skipped by `resync` (the runtime's estimate,
    not a count).
    """

    packets: int
    missing_samples: int
    duplicate_samples: int
    out_of_order_packets: int
    late_samples: int
    resets: int
    resyncs: int
    resync_skipped_samples: int


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        as_int = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if as_int < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {as_int}")
    return int(as_int)


class SequenceTracker:
    """Raw device counters in, absolute sample indices out; gaps, duplicates, late packets
    and device resets counted.

    `counter_bits`: the counter wraps at 2**counter_bits (1-64); 0 means the device has no
    counter and the driver counts, so the counter never wraps. `reset_threshold`: a backward
    jump of more than this many samples is a device reset (default: 1024, at most a quarter
    of the counter range). `max_gap`: a forward jump of more than this many samples is taken
    as a reset too (default: none; give one when a gap that long is less plausible than a
    device restart, e.g. the samples of the longest outage the link survives).
    """

    def __init__(
        self,
        counter_bits: int,
        reset_threshold: int | None = None,
        *,
        max_gap: int | None = None,
    ) -> None:
        bits = _check_int("counter_bits", counter_bits, 0)
        if bits > 64:
            raise ValueError(
                f"counter_bits must be 0 (no device counter) or 1-64, got {counter_bits!r}"
            )
        self._counter_bits = bits
        self._modulus = 1 << bits if bits else 0
        if reset_threshold is None:
            self._reset_threshold = (
                min(DEFAULT_RESET_THRESHOLD, self._modulus // 4)
                if self._modulus
                else DEFAULT_RESET_THRESHOLD
            )
        else:
            self._reset_threshold = _check_int("reset_threshold", reset_threshold, 0)
        self._max_gap = None if max_gap is None else _check_int("max_gap", max_gap, 1)
        self._next_index = 0
        self._next_raw: int | None = None  # None: the next packet starts a fresh mapping
        self._unseen: list[tuple[int, int]] = []  # absolute [start, stop) counted missing
        self._packets = 0
        self._missing = 0
        self._duplicates = 0
        self._out_of_order = 0
        self._late = 0
        self._resets = 0
        self._resyncs = 0
        self._resync_skipped = 0

    @property
    def counter_bits(self) -> int:
        return self._counter_bits

    @property
    def reset_threshold(self) -> int:
        return self._reset_threshold

    @property
    def next_index(self) -> int:
        """Absolute index the next in-order sample will get."""
        return self._next_index

    @property
    def totals(self) -> SequenceTotals:
        """A snapshot of the running counts."""
        return SequenceTotals(
            packets=self._packets,
            missing_samples=self._missing,
            duplicate_samples=self._duplicates,
            out_of_order_packets=self._out_of_order,
            late_samples=self._late,
            resets=self._resets,
            resyncs=self._resyncs,
            resync_skipped_samples=self._resync_skipped,
        )

    def admit(self, raw_counter: int, n_samples: int) -> Admission:
        """Classify a packet of `n_samples` whose first sample has device counter `raw_counter`."""
        # Plain ints (the usual case) skip the general conversion: this runs once per packet.
        if type(n_samples) is int and n_samples >= 0:
            n = n_samples
        else:
            n = _check_int("n_samples", n_samples, 0)
        if type(raw_counter) is int and raw_counter >= 0:
            raw = raw_counter
        else:
            raw = _check_int("raw_counter", raw_counter, 0)
        modulus = self._modulus
        if modulus and raw >= modulus:
            raise ValueError(
                f"raw_counter {raw} does not fit a {self._counter_bits}-bit counter "
                f"(0..{modulus - 1}); check the stream's counter_bits"
            )
        self._packets += 1
        expected = self._next_raw
        base = self._next_index
        if expected is None:
            return self._place(raw, n, base, "ok", 0)
        delta = raw - expected
        if modulus:
            half = modulus >> 1
            delta = (delta + half) % modulus - half  # signed distance in [-half, half)
        if delta == 0:
            return self._place(raw, n, base, "ok", 0)
        if delta > 0:
            if self._max_gap is not None and delta > self._max_gap:
                return self._reset(raw, n, base)
            self._missing += delta
            self._remember_unseen(base, base + delta)
            return self._place(raw, n, base + delta, "gap", delta)
        if -delta > self._reset_threshold:
            return self._reset(raw, n, base)
        return self._behind(raw, n, base + delta, base)

    def resync(self, next_index: int) -> None:
        """Resume at absolute `next_index`: the next packet starts a fresh counter mapping there.

        For reconnects and device resets, with the index the runtime estimates from the
        clock. Indices never go back: a value below `next_index` is raised to it.
        """
        target = _check_int("next_index", next_index, 0)
        target = max(target, self._next_index)
        self._resyncs += 1
        self._resync_skipped += target - self._next_index
        self._next_index = target
        self._next_raw = None
        self._unseen.clear()

    # -- internals ---------------------------------------------------------------------

    def _place(self, raw: int, n: int, first: int, kind: AdmissionKind, gap: int) -> Admission:
        self._next_index = first + n
        self._next_raw = (raw + n) % self._modulus if self._modulus else raw + n
        return Admission(first, 0, n, gap, kind)

    def _reset(self, raw: int, n: int, base: int) -> Admission:
        self._resets += 1
        self._unseen.clear()  # counters from before the reset mean nothing now
        return self._place(raw, n, base, "reset", 0)

    def _behind(self, raw: int, n: int, start: int, base: int) -> Admission:
        """A packet starting at absolute `start` < `base` (the next expected index)."""
        stop = start + n
        behind_stop = min(stop, base)
        late = self._take_unseen(start, behind_stop)
        skip = behind_stop - start
        self._duplicates += skip - late
        if late:
            self._out_of_order += 1
            self._late += late
        kind: AdmissionKind = "out_of_order" if late else "duplicate"
        n_keep = n - skip
        if n_keep > 0:
            self._next_index = stop
            self._next_raw = (raw + n) % self._modulus if self._modulus else raw + n
        return Admission(start + skip, skip, n_keep, 0, kind)

    def _remember_unseen(self, start: int, stop: int) -> None:
        # Anything further back than the reset threshold can only come back as a "reset".
        horizon = stop - self._reset_threshold
        unseen = [r for r in self._unseen if r[1] > horizon]
        unseen.append((start, stop))
        if len(unseen) > _MAX_UNSEEN_RANGES:
            del unseen[: len(unseen) - _MAX_UNSEEN_RANGES]
        self._unseen = unseen

    def _take_unseen(self, start: int, stop: int) -> int:
        """Remove `[start, stop)` from the unseen ranges; return how many indices it covered."""
        if stop <= start or not self._unseen:
            return 0
        covered = 0
        kept: list[tuple[int, int]] = []
        for a, b in self._unseen:
            lo = max(a, start)
            hi = min(b, stop)
            if lo >= hi:
                kept.append((a, b))
                continue
            covered += hi - lo
            if a < lo:
                kept.append((a, lo))
            if hi < b:
                kept.append((hi, b))
        self._unseen = kept
        return covered


def contiguous_runs(counter: npt.NDArray[Any], modulus: int) -> list[tuple[int, int]]:
    """[start, stop) of the runs in a packet-counter array whose counters step by exactly 1
    (mod `modulus`): a driver cuts its blocks there, so the tracker sees every jump."""
    if counter.shape[0] == 0:
        return []
    breaks = np.flatnonzero((np.diff(counter) % modulus) != 1) + 1
    edges = [0, *breaks.tolist(), int(counter.shape[0])]
    return list(itertools.pairwise(edges))
