"""Device time -> host monotonic time, one online model per device.

Why not stamp samples with their host arrival time: BLE hands notifications over in batches
once per connection interval (7.5-50 ms) and USB-serial adapters flush every 16 ms, so the
arrival time of a sample is late by a varying 0-50 ms. A reaction time of 100 ms cannot
carry that. Every sample is instead stamped from its *device* time through a map

    host = offset + (1 + drift) * device_time

fitted online per device from the packets themselves.

Observations and what they say
------------------------------
Per packet: the device time x of its last sample and the host arrival time y. The transport
delay y - truth(x) is never negative and has no upper bound (batching, retries, OS stalls),
so the information is in the *lower envelope* of the (x, y) cloud: the line lies on or below
every point and as close to the lowest ones as possible. A least-squares fit would estimate
the mean delay, which is exactly what changes with batching.

Batches bound it from below too: a transport sends what it has at each delivery (a BLE
connection event, a USB latency-timer flush), so a packet arriving in a later batch than the
previous packet was not complete when the previous batch left: truth(x) > that batch's first
arrival (batches: arrivals more than `batch_tol_s` apart). With several packets per batch the
first packet of a batch sits as close above this lower bound as the last packet of a batch
sits below its own arrival, so the two sides are equally sharp.

A time-sync exchange (host sends at `host_send_s`, the device answers with its clock, the
answer arrives at `host_recv_s`) bounds the map from both sides: send <= truth(x) <= recv.

The estimator (and why this one)
--------------------------------
1. Per-bin minima. Device time is cut into bins of `bin_s` (default window_s / 120, 0.5 s
   for a 60 s window); each bin keeps only its lowest point (lowest y - slope * x under the
   current slope). This makes `observe` O(1) with a handful of float operations whatever
   the packet rate, bounds memory (window_s / bin_s points), and loses nothing the envelope
   needs: only the lowest points of a neighbourhood can touch the hull. The runtime hands
   over a block's packets at once (`observe_block`): one jitted call does them and maps the
   samples, and leaves to Python only what needs it (a bin to close, a suspected
   discontinuity, the first packet of a fit). A refit runs once
   per closed bin (a few jitted calls: a few µs, ~0.1 ms with the batch bracket of item 5),
   never per packet. Each bin also keeps its highest batch lower bound (item 5).
2. Drift, mature fit (data span > window_s): the lower-envelope linear programme of Moon,
   Skelly & Towsley (1999), "Estimation and removal of clock skew from network delay
   measurements", IEEE INFOCOM: among lines below every point, the one maximising the sum
   of its values, i.e. the lower convex hull's edge above the mean device time
   (`_clock_kernels.envelope_fit`, O(n)). It runs over a longer *drift horizon*
   (`drift_window_s`, default 4 x window_s, on coarser bins so the point count stays the
   same). Why longer: its slope error is at most (envelope excess at the horizon's ends) /
   (half the horizon), and with BLE the envelope is a sawtooth (see below) whose teeth
   can be 30 s apart; a horizon holding a single tooth bottom gives a slope wrong by the
   whole drift (measured: a 2.5 ms error at 50 ms intervals with a 60 s horizon, gone
   with 240 s). Crystal drift changes by well under 1 ppm per minute, so the long
   horizon costs nothing in tracking.
3. Drift, young fit (span <= window_s): least squares through the bin minima after
   dropping stalled bins (`_clock_kernels.minima_slope`). On a short span the hull's slope
   hangs on two noisy vertices; the minima are order statistics of a stationary delay
   distribution, so a line through all of them is far steadier (measured: p99 error
   10-60 s after start, worst of 12 runs at 30 ms intervals: 1.47 -> 0.83 ms). Before
   `min_fit_span_s` of data the slope is 0: a slope from a second of data is noise. The
   slope is then shrunk toward 0 by its own standard error against a 100 ppm prior
   (`_clock_kernels.shrink_slope`): a few ppm of change with dense packets, but sparse long
   frames (a Polar H10: one frame per 0.18-0.56 s, most bins holding only a frame locked
   25-30 ms late to the connection events) make the minima a sawtooth whose plain slope
   ran to the 300 ppm limit. For the same reason the line goes through the lowest bin of
   each span as long as the longest recent gap between bins near the floor
   (`_clock_kernels.group_minima`): every bin on a dense link, a few seconds' worth on
   sparse frames (simulated H10, 96 runs of 60 s: worst p99 8-16 ms -> 5-6 ms).
4. Offset: the highest line of that slope below every bin minimum of the recent window
   (`window_s`): the envelope. Between refits a packet that lies below the line lowers
   the offset at once, so the line is always on or below every accepted arrival.
5. Batch bracket (when most batches carry several packets and no time-sync is in the
   window): among all lines below every arrival and above every batch lower bound of the
   window, with slopes within the drift limit, the map takes the middle of the values they
   reach at the newest device time, and the middle of their slopes in a young fit (the long
   horizon's slope, kept within theirs, in a mature one): `_clock_kernels.bracket_range`,
   a few concave one-dimensional searches. Why: on coarse links the envelope is a sawtooth
   (below), late by up to the phase spacing until a phase passes zero (measured: the
   simulated platform, 8 ms packets at 30/50 ms events, 50 ppm, was 0.9-1.4 ms late from 10
   to 30 s, p99 1.7 ms); the lower bounds make the complementary sawtooth, so the middle is
   within half the spacing at once (p99 0.86-0.97 ms), and a line through the envelope's
   minima tilts at every tooth (-300 ppm fitted for -50 after a 1.7 ms drop) while the
   lines that fit between both sides do not. A lower bound above its own bin's lowest
   arrival (more than a slope error can explain) is not one (a batch the link capped after
   missed events, a late host wake-up): dropped. When no line fits between the sides the
   envelope stands alone as before; a late lower bound can only pull the map toward the
   envelope. With one packet per batch or fewer (7.5 ms events, packets longer than the
   interval) the lower bounds are loose by the packet's excess over the interval while the
   envelope is sharp: not used (`_MULTI_MIN`). Host-stack delays push lower bounds late by
   the delay of the batch they refer to: on a link with ms-scale delays most are dropped or
   make the sides cross, and the model is back to the envelope.
6. Event grid (sparse links, where item 5 is off): BLE delivers only at connection events,
   a grid of one interval (a multiple of 1.25 ms) that the host sees through every arrival
   even when most events carry nothing. The grid is inferred from the recent batch
   arrivals (`_clock_kernels.event_grid`: the largest interval on which 90% of them sit
   within a quarter interval of one phase, that phase's slow slide against the host clock
   fitted as a lower envelope). A packet then left at the grid event just before its
   arrival and was not complete at the event before that (a device sends what it has at
   each event): its mapped time lies after the event before (taken with the fastest host
   path seen, like the envelope), a lower bound that carries neither the host path's
   variable delay nor the sparseness. Kept also from packets that waited almost a whole
   interval (the envelope's stall rule sets those aside, yet their bound is the tightest),
   these bounds and the arrivals make a bracket of item 5's kind: slope
   from the middle of the feasible slopes (or the young slope kept within them), the map
   in the middle of the offsets feasible at that slope. Why: an H10's ECG frames visit
   their 39 phases over 22 s and the envelope alone is 1-3 ms high for the first minute;
   the grid bracket closes from both sides at once (simulated H10, p99 after 10 s: 4.4 ->
   2.9 ms at 100 ppm; through the fake BlueZ: see benchmarks/bench_ble.py). It steps
   aside by itself: no grid found (USB serial, a link without fixed events, a host too
   unsteady for a quarter interval), a dense link (item 5 applies), sides that cross (a
   device that holds frames back), or a bracket wider than a quarter interval (few
   phases seen: the middle would be a guess, while the envelope is exact for a packet on
   the tick). An arrival a host stall pushed a whole interval late is placed on the next
   event: its lower bound is then too high, which the crossing check usually catches;
   one left over moves the map at most toward the envelope.
7. Time-sync (NTP's clock filter, bounded): the feasible offsets are [latest send, earliest
   arrival or answer] under the fitted slope; within that interval the model takes the
   midpoint of the exchange with the shortest round trip. That is right when both legs
   have the same minimum latency (a serial line: it removes the fixed latency the envelope
   cannot see) and is clipped to the envelope when they do not (a BLE answer waits a whole
   connection interval, so its midpoint is late and the arrivals are the better bound).
   `offset_uncertainty_ms` is then the largest distance from the estimate to either end
   of the feasible interval: a bound, not a statistic (likewise with the batch bracket:
   the distance to the farthest value the fitting lines reach now, slope doubt included
   in a young fit).

What cannot be observed
-----------------------
Arrivals only bound the map from above. A fixed minimum latency (bytes on the wire, the
fastest possible trip through the host stack) shifts the envelope and is indistinguishable
from an offset; without time-sync the model's times are late by it. A second limit is
phase: BLE connection events and USB frames run on the host's clock grid, packets on the
device's. When the packet period and the connection interval are commensurate, the lowest
delay reachable is the phase spacing between them (e.g. 10 ms packets in 30 ms intervals
never get closer than their fixed phase), and it slides only as fast as the relative drift;
the envelope touches the truth only where that phase passes zero. Accuracy is then bounded
by the phase spacing until the horizon spans such a passage (1024 Hz in 16-sample packets
at 50 ms intervals: 3.1 ms spacing; the same in 15-sample packets: 0.2 ms). Long frames make it
worse: a Polar H10's ECG frame (73 samples at 130 Hz) is 18 + 28/39 connection intervals of
30 ms, so its frames fall on 39 phases 0.77 ms apart, visited in a fixed order over 22 s,
and its ACC frame (36 at 200 Hz) is exactly 6 intervals, locked to one phase that slides
with the drift (0.1 ms/s at 100 ppm). In the first minute the lowest arrival seen is then
often 1-3 ms above the floor (simulated and through the fake BlueZ), plus the fixed
latency. With no drift at all between the grids the phase never moves and the bias stays:
it is then a fixed latency like the one above.

Discontinuities
---------------
A residual r = y - line(x) is checked for each packet:
- r < -`jump_tol_s` (an arrival before the device time it carries: impossible, since delays
  are not negative) or a device time going back by more than `back_tol_s` (0.1 s: streams
  of one device may share a model and interleave by up to a packet's duration): after
  `confirm_n` consecutive such packets, the clock stepped: restart the fit from these
  packets and count a discontinuity. Fewer are not a step: a packet early by less than
  `stall_tol_s` and in device-time order with its neighbours shows the line was above the
  floor (sparse frames: the first line can rest on frames 25 ms late) and is accepted once
  the next packet is normal; anything else (a corrupt timestamp) is ignored.
- r > `stall_tol_s` for every packet over `hold_s` of device time: the device clock stepped
  back (or restarted) by more than the tolerance; a transport stall drains within that time
  and lets at least one packet near the floor again. Restart, count. On a link whose
  packets reach the floor rarely the hold stretches to 3x the longest recent gap between
  such packets (at most window_s / 4): an H10's ACC frames stay 25-30 ms late for minutes
  while the ECG frames beside them reach the floor every 1-2 s.
- Every bin minimum more than `shift_tol_s` (5 ms) above the floor of the seconds before
  (the lowest bin minimum then, never below the envelope) for `shift_hold_s` (5 s, or 5x
  the longest recent gap between bins near the floor, at most window_s / 2): a smaller step
  back; the floor moved up and stayed. Restart, count. Left alone
  it would hold the times early by the step for a window and bend the drift fit for a
  drift horizon. The price: a link so degraded that no packet in 5 s gets within 5 ms of
  the floor restarts the fit too (and once more when the floor comes back, through the
  first rule). Steps back under 5 ms are absorbed as a slowly leaving offset error.
The runtime calls `reset()` when a device reconnects with an unknown clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from nmcore import _clock_kernels as ck
from nmcore._clock_kernels import (
    affine_map,
    bracket_range,
    envelope_fit,
    event_grid,
    grid_map,
    group_minima,
    local_floor,
    minima_slope,
    observe_block,
    shrink_slope,
)

__all__ = ["ClockModel", "ClockStats", "TickUnwrapper"]

FloatArray = npt.NDArray[np.float64]
T = TypeVar("T", float, int, bool)

# `observe` maps no samples: the kernel's output for it
_NO_TIMES = np.empty(0)
# Residual ring for the jitter figure: ~5 s of packets at 100 packets/s, enough for a p95.
_JITTER_RING = 512
# Time-sync points kept per window (one ping per second over 120 s fits; older ones drop).
_SYNC_CAP = 256
# Coarse bins needed before the long horizon's drift replaces the window's own.
_MIN_COARSE = 4
# Fraction of batches carrying several packets: gain of its running mean (~30 batches), and
# the share above which the batch lower bounds are as sharp as the envelope (see _lower_ok).
_MULTI_GAIN = 1.0 / 32.0
_MULTI_MIN = 0.5
# Packets buffered while a discontinuity is being confirmed, replayed into the new fit.
_RUN_CAP = 256
# Spread of crystal drift expected before the data say otherwise (quartz: tens of ppm,
# 100 ppm for a poor one): a young slope as uncertain as this is shrunk toward 0 by half.
_DRIFT_PRIOR = 100e-6
# A run must outlast this many of the link's longest recent gaps between packets (stall
# rule) or bins (shift rule) near the floor before it counts as a clock step: room for a
# gap longer than any seen yet, without waiting long on a link that reaches the floor often.
# Sparse H10-like frames (simulated, 40 runs of 60 s): gaps between packets within 20 ms
# of the floor reach 1.9 s and are rarely exceeded; gaps between bins within 5 ms of it
# run to 7 s after only 2 s were seen, so the shift rule needs the wider margin.
_STALL_GAP_FACTOR = 3.0
_SHIFT_GAP_FACTOR = 5.0
# Connection-event grid (see _detect_grid): batch arrivals kept, the step of BLE connection
# intervals, the shortest interval, the share of batches that must sit on one grid phase
# (within a quarter interval), how much a grid lower bound is lowered for the phase estimate.
_GRID_CAP = 256
_GRID_STEP_S = 0.00125
_GRID_MIN_K = 6
_GRID_FRAC = 0.9
_GRID_MARGIN_S = 0.0002
_GRID_SPAN_S = 20.0
# Drift of the radio's clock (which times the events) against the host's: 200 ppm at most.
_GRID_SLIDE = 200e-6
# The grid is inferred again every so often (0.3 ms a time for an H10's 30 ms events).
_GRID_EVERY_S = 2.0
# The grid bracket is used only once it is narrower than this share of the interval.
_GRID_WIDTH = 0.25


def _peak_hold(held: float, gap: float, tau_s: float, *, grow: bool) -> float:
    """The longest recent gap: decays by the device time passed (`gap`) over `tau_s`, and a
    longer `gap` replaces it when `grow`. A NaN gap (no previous point) leaves it unchanged."""
    if not gap >= 0.0:
        return held
    decayed = held * max(0.0, 1.0 - gap / tau_s)
    return max(gap, decayed) if grow else decayed


class _Slot(Generic[T]):
    """A `ClockModel` scalar kept in its state array `_s` (slot `i`, `_clock_kernels.S_*`),
    read back as `kind` (float, int or bool: the array holds them as exact floats)."""

    __slots__ = ("i", "kind")
    i: int
    kind: Callable[[float], T]

    def __init__(self, i: int, kind: Callable[[float], T]) -> None:
        self.i = i
        self.kind = kind

    def __get__(self, obj: Any, owner: Any = None) -> T:
        if obj is None:  # the class attribute itself (introspection)
            return self  # type: ignore[return-value]
        return self.kind(float(obj._s[self.i]))

    def __set__(self, obj: Any, value: T) -> None:
        obj._s[self.i] = value


class TickUnwrapper:
    """Turns a wrapping device tick counter into monotonic device seconds.

    `bits`: the counter wraps at 2**bits. `tick_hz`: ticks per device second (the sample rate
    for a sample counter). A step forward of less than half the wrap is taken as time going
    forward (across a wrap if needed); a step back of less than half the wrap as time going
    back, so that a device restart shows up as a backward step the clock model can detect
    instead of a phantom wrap. After a silence longer than half the wrap the count is
    ambiguous: use `seconds_near` with the expected device time.
    """

    __slots__ = ("_half", "_last", "_mask", "_modulus", "_tick_hz", "_total")

    def __init__(self, bits: int, tick_hz: float) -> None:
        if not 1 <= bits <= 64:
            raise ValueError(f"bits={bits}: a counter width must be 1..64 bits")
        if not tick_hz > 0 or not math.isfinite(tick_hz):
            raise ValueError(f"tick_hz={tick_hz}: the tick rate must be a positive number of Hz")
        self._modulus = 1 << bits
        self._mask = self._modulus - 1
        self._half = self._modulus >> 1
        self._tick_hz = float(tick_hz)
        self._last: int | None = None
        self._total = 0

    @property
    def tick_hz(self) -> float:
        return self._tick_hz

    def ticks(self, raw_ticks: int) -> int:
        """Monotonic tick count (exact integer) for the raw counter value."""
        if not 0 <= raw_ticks <= self._mask:
            raise ValueError(
                f"raw_ticks={raw_ticks}: outside 0..{self._mask}; check the driver's "
                "counter width (descriptor counter_bits/timestamp_bits)"
            )
        last = self._last
        if last is None:
            self._total = raw_ticks
        else:
            delta = (raw_ticks - last) & self._mask
            if delta >= self._half:
                delta -= self._modulus
            self._total += delta
        self._last = raw_ticks
        return self._total

    def seconds(self, raw_ticks: int) -> float:
        """Monotonic device seconds across wraps."""
        return self.ticks(raw_ticks) / self._tick_hz

    def seconds_near(self, raw_ticks: int, expected_s: float) -> float:
        """Device seconds choosing the wrap count that lands nearest `expected_s`.

        For the first packet after a silence that may span wraps; `expected_s` comes from
        the clock model (`ClockModel.to_device` of the arrival time).
        """
        if not 0 <= raw_ticks <= self._mask:
            raise ValueError(f"raw_ticks={raw_ticks}: outside 0..{self._mask}")
        expected_ticks = expected_s * self._tick_hz
        wraps = round((expected_ticks - raw_ticks) / self._modulus)
        self._total = raw_ticks + wraps * self._modulus
        self._last = raw_ticks
        return self._total / self._tick_hz

    def reset(self) -> None:
        """Forget the history: the next value starts a new count."""
        self._last = None
        self._total = 0


@dataclass(frozen=True, slots=True)
class ClockStats:
    """The model's state for monitoring and provenance.

    `drift_ppm`: host seconds per device second minus 1, in ppm. `offset_uncertainty_ms`:
    with time-sync or the batch bracket in use, the largest distance from the offset to
    either end of the feasible interval (a bound while the bounds are true); otherwise the
    median height of the window's bin minima above the envelope (how sharply the floor is
    defined; it cannot include the unobservable fixed minimum latency).
    `arrival_jitter_ms`: p95 of arrival delays above the envelope. `model_age_s`: since the
    last accepted observation.
    `event_interval_ms`: the delivery grid's interval (BLE connection interval, in host
    time) while the grid bracket sets the map, else None.
    `n_observations`: accepted since the last restart. `resets`: restarts of the fit
    (detected discontinuities plus `reset()` calls); `discontinuities`: detected ones only.
    """

    drift_ppm: float
    offset_uncertainty_ms: float
    arrival_jitter_ms: float
    model_age_s: float
    n_observations: int
    resets: int
    settled: bool
    discontinuities: int = 0
    span_s: float = 0.0
    n_sync: int = 0
    sync_rejected: int = 0
    effective_rate_hz: float | None = None
    event_interval_ms: float | None = None


class ClockModel:
    """Online map from one device's time to host monotonic time (see the module docstring).

    Parameters (seconds unless named otherwise): `window_s` sliding window of the offset
    (and of the drift while the fit is young); `nominal_rate_hz` the stream's nominal sample
    rate (enables `block_times` and the effective rate in `stats`); `bin_s` envelope bin
    width (default window_s / 120, within 0.05..2 s); `drift_window_s` horizon of the drift
    fit (default 4 x window_s); `settle_s` data span after which the model calls itself
    settled (default min(10, window_s / 2)); `max_drift_ppm` slope limit; `min_fit_span_s`
    span before the slope is fitted at all; `jump_tol_s`, `back_tol_s`, `stall_tol_s`,
    `hold_s`, `shift_tol_s`, `shift_hold_s`, `confirm_n` the discontinuity rules;
    `batch_tol_s` arrivals closer than this belong to one delivery batch (a BLE event's
    notifications, one USB read): err long, a split batch makes wrong lower bounds.

    Not thread-safe: one model per device, used from the task that reads the device.
    """

    __slots__ = (
        "_bu",
        "_bv",
        "_bwu",
        "_bww",
        "_c_env",
        "_cap",
        "_cbin_s",
        "_ccap",
        "_clive_end",
        "_clive_key",
        "_clive_u",
        "_clive_v",
        "_cn",
        "_confirm_n",
        "_cstart",
        "_cu",
        "_cv",
        "_discontinuities",
        "_drift_window_s",
        "_fit_out",
        "_ga",
        "_gr",
        "_grid_out",
        "_grid_t",
        "_grid_used",
        "_grlu",
        "_grlw",
        "_gru",
        "_grv",
        "_gu",
        "_gv",
        "_gwork",
        "_half_s",
        "_high_since",
        "_hold_s",
        "_hull",
        "_jitter",
        "_low_gap_s",
        "_low_u",
        "_lower_dropped",
        "_max_drift",
        "_min_fit_span_s",
        "_n_bins",
        "_nominal_rate_hz",
        "_range_out",
        "_resets",
        "_run",
        "_run_first_x",
        "_run_n",
        "_s",
        "_settle_s",
        "_settled",
        "_shift_hold_s",
        "_shift_tol_s",
        "_start",
        "_su",
        "_sv",
        "_sw",
        "_sync_n",
        "_sync_rejected",
        "_sync_start",
        "_work",
    )

    # the per-packet path's scalars live in `_s`, where `observe_block` reads and writes them
    _x0 = _Slot(ck.S_X0, float)
    _y0 = _Slot(ck.S_Y0, float)
    _base = _Slot(ck.S_BASE, float)
    _slope = _Slot(ck.S_SLOPE, float)
    _d = _Slot(ck.S_D, float)
    _u_last = _Slot(ck.S_U_LAST, float)
    _live_end = _Slot(ck.S_LIVE_END, float)
    _live_key = _Slot(ck.S_LIVE_KEY, float)
    _live_u = _Slot(ck.S_LIVE_U, float)
    _live_v = _Slot(ck.S_LIVE_V, float)
    _lw_key = _Slot(ck.S_LW_KEY, float)
    _lw_u = _Slot(ck.S_LW_U, float)
    _lw_w = _Slot(ck.S_LW_W, float)
    _floor_u = _Slot(ck.S_FLOOR_U, float)
    _floor_gap_s = _Slot(ck.S_FLOOR_GAP, float)
    _last_arrival_s = _Slot(ck.S_LAST_ARRIVAL, float)
    _env_shift = _Slot(ck.S_ENV_SHIFT, float)
    _ev_first = _Slot(ck.S_EV_FIRST, float)
    _ev_prev = _Slot(ck.S_EV_PREV, float)
    _ev_xmin = _Slot(ck.S_EV_XMIN, float)
    _ev_xmax = _Slot(ck.S_EV_XMAX, float)
    _multi = _Slot(ck.S_MULTI, float)
    _grid_low = _Slot(ck.S_GRID_LOW, float)
    _grid_iv = _Slot(ck.S_GRID_IV, float)
    _grid_p = _Slot(ck.S_GRID_P, float)
    _gl_end = _Slot(ck.S_GL_END, float)
    _gl_ukey = _Slot(ck.S_GL_UKEY, float)
    _gl_uu = _Slot(ck.S_GL_UU, float)
    _gl_uv = _Slot(ck.S_GL_UV, float)
    _gl_lkey = _Slot(ck.S_GL_LKEY, float)
    _gl_lu = _Slot(ck.S_GL_LU, float)
    _gl_lw = _Slot(ck.S_GL_LW, float)
    _batch_tol_s = _Slot(ck.S_BATCH_TOL, float)
    _stall_tol_s = _Slot(ck.S_STALL_TOL, float)
    _back_tol_s = _Slot(ck.S_BACK_TOL, float)
    _jump_tol_s = _Slot(ck.S_JUMP_TOL, float)
    _window_s = _Slot(ck.S_WINDOW, float)
    _bin_s = _Slot(ck.S_BIN, float)
    _n = _Slot(ck.S_N, int)
    _run_kind = _Slot(ck.S_RUN_KIND, int)
    _jit_i = _Slot(ck.S_JIT_I, int)
    _ga_start = _Slot(ck.S_GA_START, int)
    _ga_n = _Slot(ck.S_GA_N, int)
    _gr_start = _Slot(ck.S_GR_START, int)
    _gr_n = _Slot(ck.S_GR_N, int)
    _fitted = _Slot(ck.S_FITTED, bool)
    _floor_high = _Slot(ck.S_FLOOR_HIGH, bool)

    def __init__(
        self,
        *,
        window_s: float = 60.0,
        nominal_rate_hz: float | None = None,
        bin_s: float | None = None,
        drift_window_s: float | None = None,
        settle_s: float | None = None,
        max_drift_ppm: float = 300.0,
        min_fit_span_s: float = 2.0,
        jump_tol_s: float = 0.005,
        back_tol_s: float = 0.1,
        stall_tol_s: float = 0.02,
        hold_s: float = 2.0,
        shift_tol_s: float = 0.005,
        shift_hold_s: float = 5.0,
        confirm_n: int = 3,
        batch_tol_s: float = 0.002,
    ) -> None:
        self._s = np.zeros(ck.S_LEN)
        self._s[ck.S_MULTI_GAIN] = _MULTI_GAIN
        self._s[ck.S_MULTI_MIN] = _MULTI_MIN
        self._s[ck.S_GRID_MARGIN] = _GRID_MARGIN_S

        def positive(name: str, value: float) -> float:
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name}={value}: must be a positive number of seconds")
            return float(value)

        self._window_s = positive("window_s", window_s)
        if nominal_rate_hz is not None and not (
            nominal_rate_hz > 0 and math.isfinite(nominal_rate_hz)
        ):
            raise ValueError(
                f"nominal_rate_hz={nominal_rate_hz}: must be a positive rate in Hz or None"
            )
        self._nominal_rate_hz = nominal_rate_hz
        self._bin_s = positive(
            "bin_s", bin_s if bin_s is not None else min(2.0, max(0.05, window_s / 120.0))
        )
        if self._bin_s * 4 > self._window_s:
            raise ValueError(
                f"bin_s={self._bin_s}: must be at most window_s / 4 = {self._window_s / 4}"
            )
        self._settle_s = positive(
            "settle_s", settle_s if settle_s is not None else min(10.0, window_s / 2.0)
        )
        if not 0 < max_drift_ppm < 10_000:
            raise ValueError(f"max_drift_ppm={max_drift_ppm}: must be in (0, 10000) ppm")
        self._max_drift = max_drift_ppm * 1e-6
        self._min_fit_span_s = positive("min_fit_span_s", min_fit_span_s)
        self._jump_tol_s = positive("jump_tol_s", jump_tol_s)
        self._back_tol_s = positive("back_tol_s", back_tol_s)
        self._stall_tol_s = positive("stall_tol_s", stall_tol_s)
        self._hold_s = positive("hold_s", hold_s)
        self._shift_tol_s = positive("shift_tol_s", shift_tol_s)
        self._shift_hold_s = positive("shift_hold_s", shift_hold_s)
        if confirm_n < 1:
            raise ValueError(f"confirm_n={confirm_n}: must be at least 1 packet")
        self._confirm_n = int(confirm_n)
        self._batch_tol_s = positive("batch_tol_s", batch_tol_s)
        # Ring of closed-bin minima, one slot spare for the live bin during a refit.
        self._cap = math.ceil(self._window_s / self._bin_s) + 3
        self._bu = np.zeros(self._cap)
        self._bv = np.zeros(self._cap)
        # Per bin, the highest lower bound (NaN: none in that bin), aligned with _bu/_bv.
        self._bwu = np.full(self._cap, np.nan)
        self._bww = np.full(self._cap, np.nan)
        # Bins of the event-grid bracket (see _grid_bound): per bin the lowest upper bound
        # (+inf: none) and the highest lower bound (NaN: none). Unlike the envelope's bins
        # they keep packets that waited almost a whole interval (residual above
        # stall_tol_s): those are the ones whose lower bound is tight.
        self._gr = np.zeros((4, self._cap))  # the rows below, one array for the kernel
        self._gru = self._gr[0]
        self._grv = self._gr[1]
        self._grv[:] = np.inf
        self._grlu = self._gr[2]
        self._grlw = self._gr[3]
        self._grlw[:] = np.nan
        self._ga = np.zeros(_GRID_CAP)  # first arrival of each recent batch (host s)
        self._gwork = np.zeros(2 * _GRID_CAP)
        self._grid_out = np.zeros(2)
        self._grid_clear()
        # The drift horizon: coarse bins holding as many points as the window's fine ones.
        self._drift_window_s = max(
            self._window_s, positive("drift_window_s", drift_window_s or 4.0 * self._window_s)
        )
        self._cbin_s = self._bin_s * math.ceil(self._drift_window_s / self._window_s)
        self._ccap = math.ceil(self._drift_window_s / self._cbin_s) + 3
        self._cu = np.zeros(self._ccap)
        self._cv = np.zeros(self._ccap)
        self._hull = np.zeros(max(self._cap, self._ccap), dtype=np.int64)
        self._work = np.zeros(self._cap)
        self._gu = np.zeros(self._cap)  # per-span bin minima for the young slope
        self._gv = np.zeros(self._cap)
        self._fit_out = np.zeros(3)
        self._range_out = np.zeros(5)
        self._su = np.zeros(_SYNC_CAP)
        self._sv = np.zeros(_SYNC_CAP)  # send, as v
        self._sw = np.zeros(_SYNC_CAP)  # receive, as v
        self._jitter = np.zeros(_JITTER_RING)
        self._run: deque[tuple[float, float]] = deque(maxlen=_RUN_CAP)
        self._resets = 0
        self._discontinuities = 0
        self._sync_rejected = 0
        self._lower_dropped = 0
        self._multi = 0.0  # a property of the link: kept across restarts
        # Longest recent device-time gaps between packets near the floor (r <= stall_tol_s)
        # and between bins near the envelope: properties of the link, kept across restarts.
        self._floor_gap_s = 0.0
        self._low_gap_s = 0.0
        self._restart()

    # -- state -----------------------------------------------------------------------------

    def _restart(self) -> None:
        self._n = 0
        self._x0 = math.nan
        self._y0 = math.nan
        self._base = math.nan  # host time at device time x0 under the current line
        self._slope = 1.0
        self._d = 0.0
        self._c_env = 0.0
        self._env_shift = 0.0
        self._half_s = math.nan
        self._fitted = False
        self._settled = False
        self._start = 0
        self._n_bins = 0
        self._cstart = 0
        self._cn = 0
        self._clive_end = 0.0
        self._clive_key = math.inf
        self._clive_u = 0.0
        self._clive_v = 0.0
        self._live_end = 0.0
        self._live_key = math.inf
        self._live_u = 0.0
        self._live_v = 0.0
        self._lw_key = -math.inf
        self._lw_u = 0.0
        self._lw_w = math.nan
        self._gr_start = 0
        self._gr_n = 0
        self._gl_end = -math.inf
        self._gl_clear()
        self._grid_used = False
        self._ev_first = -math.inf
        self._ev_prev = -math.inf
        self._ev_xmin = math.inf
        self._ev_xmax = -math.inf
        self._u_last = -math.inf
        self._last_arrival_s = math.nan
        self._sync_start = 0
        self._sync_n = 0
        self._jit_i = 0
        self._run.clear()
        self._run_kind = 0
        self._run_n = 0
        self._run_first_x = 0.0
        self._high_since = math.inf
        self._floor_u = math.nan
        self._floor_high = False
        self._low_u = math.nan

    def _gl_clear(self) -> None:
        self._gl_ukey = math.inf
        self._gl_uu = 0.0
        self._gl_uv = math.inf
        self._gl_lkey = -math.inf
        self._gl_lu = 0.0
        self._gl_lw = math.nan

    def _gl_store(self, j: int) -> None:
        self._gru[j] = self._gl_uu
        self._grv[j] = self._gl_uv
        self._grlu[j] = self._gl_lu
        self._grlw[j] = self._gl_lw

    def _grid_add(self, u: float, up_y: float, low_y: float) -> None:
        """Add a packet's grid bounds (host seconds; +inf / NaN: none) to the grid bins."""
        if up_y == math.inf and low_y != low_y:
            return
        if u >= self._gl_end:
            if self._gl_end != -math.inf:
                cap = self._cap
                if self._gr_n == cap - 1:
                    self._gr_start = (self._gr_start + 1) % cap
                    self._gr_n -= 1
                self._gl_store((self._gr_start + self._gr_n) % cap)
                self._gr_n += 1
                while (
                    self._gr_n > 1
                    and max(self._gru[self._gr_start], self._grlu[self._gr_start])
                    < u - self._window_s
                ):
                    self._gr_start = (self._gr_start + 1) % cap
                    self._gr_n -= 1
            self._gl_clear()
            self._gl_end = (math.floor(u / self._bin_s) + 1.0) * self._bin_s
        elif u < self._gl_end - self._bin_s:
            return  # an older bin, already closed
        d = self._d
        if up_y != math.inf:
            v = up_y - self._y0 - u
            if v - d * u < self._gl_ukey:
                self._gl_ukey = v - d * u
                self._gl_uu = u
                self._gl_uv = v
        if low_y == low_y:
            w = low_y - self._y0 - u
            if w - d * u > self._gl_lkey:
                self._gl_lkey = w - d * u
                self._gl_lu = u
                self._gl_lw = w

    def _grid_clear(self) -> None:
        self._ga_start = 0
        self._ga_n = 0
        self._grid_iv = math.nan
        self._grid_p = math.nan
        self._grid_low = math.nan
        self._grid_t = -math.inf

    def reset(self) -> None:
        """Forget the fit: the device reconnected with an unknown clock."""
        self._grid_clear()  # a new connection has its own event grid
        self._restart()
        self._resets += 1

    @property
    def settled(self) -> bool:
        """True once the fitted data span `settle_s`: the figures then mean something."""
        return self._settled

    @property
    def drift_ppm(self) -> float:
        """Current drift estimate: host seconds per device second minus 1, in ppm."""
        return self._d * 1e6

    @property
    def discontinuities(self) -> int:
        """Clock steps detected from the residuals since construction."""
        return self._discontinuities

    # -- observations ----------------------------------------------------------------------

    def observe(self, device_time_s: float, arrival_s: float) -> None:
        """One packet: device time of its last sample, host monotonic arrival time."""
        # observe_block of one packet, without its argument work (a per-packet call)
        x, y = float(device_time_s), float(arrival_s)
        if (
            observe_block(
                self._s, self._gr, self._ga, self._jitter, x, 0.0, 0, 1, 0, y, 0, _NO_TIMES
            )
            >= 0
        ):
            self._observe(x, y, packet=True)

    def observe_block(
        self,
        first_device_s: float,
        period_s: float,
        k_start: int,
        k_step: int,
        k_last: int,
        arrival_s: float,
        out: FloatArray,
    ) -> FloatArray:
        """The packets of one delivery, then the host times of its samples, in one jitted
        call for the usual case.

        Packets end at device times k * period_s + first_device_s for k in
        range(k_start, k_last, k_step) and then k_last (an empty range: one packet), all
        received at `arrival_s`. The same as `observe` on each in turn, then
        `to_host_grid(first_device_s, period_s, out)`; what the kernel leaves (the fit's
        first packet, a bin to close, a suspected discontinuity) goes through `_observe`,
        the model's reference implementation.
        """
        if k_step < 1:
            raise ValueError(f"k_step={k_step}: packet ends must run forward (k_step >= 1)")
        # typed here: the kernel would compile a variant per argument type
        first, period, arrival = float(first_device_s), float(period_s), float(arrival_s)
        k_start, k_step, k_last = int(k_start), int(k_step), int(k_last)
        s, gr, ga, jitter = self._s, self._gr, self._ga, self._jitter
        j = 0
        while True:
            j = observe_block(
                s, gr, ga, jitter, first, period, k_start, k_step, k_last, arrival, j, out
            )
            if j == ck.OBSERVED:
                return out
            if j == ck.NO_FIT:  # raises unless a suspected discontinuity holds the data
                return self.to_host_grid(first, period, out)
            # packet j, left to Python (rare: its range is not worked out per block)
            k = k_start + j * k_step if j < len(range(k_start, k_last, k_step)) else k_last
            self._observe(k * period + first, arrival, packet=True)
            j += 1

    def _observe(self, device_time_s: float, arrival_s: float, *, packet: bool) -> None:
        lower_y = math.nan
        grid_y = math.nan
        if packet:
            # Delivery batches: a packet arriving in a later batch than the previous one was
            # not complete when that batch left (a transport sends what it has), so its
            # device time maps after the previous batch's first arrival: a lower bound.
            if arrival_s > self._ev_first + self._batch_tol_s:
                gap = device_time_s - self._ev_xmax
                if 0.0 < gap < math.inf:
                    many = 1.0 if self._ev_xmax - self._ev_xmin >= 0.5 * gap else 0.0
                    self._multi += (many - self._multi) * _MULTI_GAIN
                self._ev_prev = self._ev_first
                self._ev_first = arrival_s
                self._ev_xmin = self._ev_xmax = device_time_s
                self._grid_low = self._grid_bound(arrival_s)
            else:
                self._ev_xmin = min(self._ev_xmin, device_time_s)
                self._ev_xmax = max(self._ev_xmax, device_time_s)
            if self._ev_prev != -math.inf:
                lower_y = self._ev_prev
            grid_y = self._grid_low
        else:
            grid_y = math.nan
        if self._n == 0:
            self._begin(device_time_s, arrival_s)
            return
        u = device_time_s - self._x0
        r = arrival_s - (self._base + self._slope * u)
        if (
            r > self._stall_tol_s
            or u < self._u_last - self._back_tol_s
            or (r < -self._jump_tol_s and self._fitted)
        ):
            if r > self._stall_tol_s and u >= self._u_last - self._back_tol_s:
                # Long batches (50 ms BLE events) make the first packets of a batch look
                # stalled, yet those are the ones whose lower bound is tight.
                self._lower_point(u, lower_y)
                self._grid_add(u, math.inf, grid_y)
            self._anomaly(device_time_s, arrival_s, u, r)
            return
        if self._run_kind:
            self._end_run(u)
        self._accept(u, arrival_s, r, lower_y, grid_y)

    def _begin(self, x: float, y: float) -> None:
        self._x0 = x
        self._y0 = y
        self._base = y
        self._live_end = self._bin_s
        self._accept(0.0, y, 0.0, math.nan)

    def _accept(
        self, u: float, y: float, r: float, lower_y: float, grid_y: float = math.nan
    ) -> None:
        self._n += 1
        if not u <= self._floor_u:  # also when _floor_u is NaN (first packet of a fit)
            # Only a stretch in which packets came but none near the floor counts as a gap
            # (a silent link says nothing); every stretch lets an old gap decay.
            self._floor_gap_s = _peak_hold(
                self._floor_gap_s, u - self._floor_u, self._window_s, grow=self._floor_high
            )
            self._floor_high = False
            self._floor_u = u
        self._last_arrival_s = y
        if u >= self._live_end:
            if self._close_bin(u):
                # The floor moved up and stayed: the device clock stepped back.
                x = u + self._x0
                self._restart()
                self._resets += 1
                self._discontinuities += 1
                self._begin(x, y)
                self._ev_first = y
                return
            r = y - (self._base + self._slope * u)  # refitted: residual against the new line
        if u > self._u_last:
            self._u_last = u
        # Bin key: offset under the current slope (constant within a bin: refits happen
        # only at bin boundaries, live lowering moves the offset, not the slope).
        key = r + self._base
        if key < self._live_key and u >= self._live_end - self._bin_s:
            self._live_key = key
            self._live_u = u
            self._live_v = y - self._y0 - u
        self._lower_point(u, lower_y)
        self._grid_add(u, y, grid_y)
        if r < 0.0:
            self._base += r
            r = 0.0
        # Delay above the envelope (the line sits _env_shift below it when syncs centre it).
        self._jitter[self._jit_i] = r - self._env_shift
        self._jit_i = (self._jit_i + 1) % _JITTER_RING

    def _lower_point(self, u: float, lower_y: float) -> None:
        """Keep the live bin's tightest lower bound (highest under the current slope)."""
        if lower_y == lower_y and self._live_end - self._bin_s <= u < self._live_end:
            w = lower_y - self._y0 - u
            lkey = w - self._d * u
            if lkey > self._lw_key:
                self._lw_key = lkey
                self._lw_u = u
                self._lw_w = w

    def _grid_bound(self, arrival_s: float) -> float:
        """The grid lower bound of a batch first arriving at `arrival_s` (NaN: none).

        With the link's event grid known, the batch left at the grid event just before its
        arrival, and a packet in it was not complete at the event before that (a device
        sends what it has at each event): its mapped time is after that event. Unlike the
        previous batch's arrival, this bound does not carry the host path's variable delay,
        and it is there for every packet, however sparse. An arrival far from every grid
        event (beyond a quarter interval) is not placed on the grid: no bound.
        """
        self._grid_push(arrival_s)
        iv = self._grid_iv
        if iv != iv or self._multi >= _MULTI_MIN:
            # A dense link (most batches carry several packets) has the batch bracket: the
            # previous batch was the previous event, nothing to infer.
            return math.nan
        k = math.floor((arrival_s - self._grid_p) / iv)
        event = self._grid_p + k * iv
        if arrival_s - event > 0.25 * iv:
            return math.nan
        return event - iv - _GRID_MARGIN_S

    def _grid_push(self, arrival_s: float) -> None:
        if self._ga_n == _GRID_CAP:
            self._ga_start = (self._ga_start + 1) % _GRID_CAP
            self._ga_n -= 1
        self._ga[(self._ga_start + self._ga_n) % _GRID_CAP] = arrival_s
        self._ga_n += 1

    def _detect_grid(self) -> None:
        """Infer the link's delivery grid (BLE connection events) from batch arrivals.

        Why: a sparse link (an H10 frame every 0.18-0.56 s) shows the grid only through the
        events that carry something, yet each frame then lies in one known interval before
        its event, whatever the host path did (see _grid_bound). Intervals are multiples of
        1.25 ms, no longer than the usual gap between batches; the largest one on which at
        least 90% of the recent batches (20 s) sit within a quarter interval of one phase
        wins. No grid (USB serial, a link without fixed events, an unsteady host): none.
        """
        while self._ga_n and self._ga[self._ga_start] < self._last_arrival_s - _GRID_SPAN_S:
            self._ga_start = (self._ga_start + 1) % _GRID_CAP
            self._ga_n -= 1
        now = self._last_arrival_s
        if now - self._grid_t < _GRID_EVERY_S or self._multi >= _MULTI_MIN:
            if self._multi >= _MULTI_MIN:
                self._grid_iv = math.nan  # a dense link: item 5's bracket, no grid needed
            return
        self._grid_t = now
        n = self._ga_n
        self._grid_iv = math.nan
        if n < 16:
            return
        idx = (self._ga_start + np.arange(n)) % _GRID_CAP
        gaps = np.diff(self._ga[idx])
        k_hi = int((float(np.percentile(gaps, 10)) + 0.1 * _GRID_STEP_S) / _GRID_STEP_S)
        out = self._grid_out
        if event_grid(
            self._ga,
            self._ga_start,
            n,
            _GRID_STEP_S,
            _GRID_MIN_K,
            k_hi,
            _GRID_FRAC,
            _GRID_SLIDE,
            self._gwork,
            out,
        ):
            self._grid_iv = float(out[0])
            self._grid_p = float(self._ga[self._ga_start]) + float(out[1])

    def _live_lower_w(self) -> float:
        """The live bin's lower bound, or NaN when it is none.

        A valid lower bound lies below every upper one; one above the bin's own lowest
        arrival (beyond what a slope error can do across a bin) came from a batch the link
        capped (a backlog after missed BLE events) or a late host wake-up: dropped.
        """
        w = self._lw_w
        if w == w and self._live_key != math.inf:
            d = self._d
            tol = self._bin_s * 2.0 * self._max_drift
            if w - d * self._lw_u > self._live_v - d * self._live_u + tol:
                self._lower_dropped += 1
                return math.nan
        return w

    def _stall_hold_s(self) -> float:
        """How long every packet must stay above `stall_tol_s` to be a clock step back.

        `hold_s`, or longer on a link whose packets near the floor come rarely: frames that
        are whole multiples of the connection interval (an H10's 36-sample ACC frames are
        six 30 ms events) keep one phase for minutes, all of them 25-30 ms late, and only a
        sparse stream beside them reaches the floor (measured through the fake BlueZ: runs
        of 1.9 s, and a restart 22 s in that cost 14 ms). A transport stall drains within
        the longest gap the link shows between packets near the floor; a step back does not.
        """
        return min(max(self._hold_s, _STALL_GAP_FACTOR * self._floor_gap_s), self._window_s / 4.0)

    def _shift_hold(self) -> float:
        """`shift_hold_s`, or longer when bins near the envelope are rare (see _stall_hold_s)."""
        return min(
            max(self._shift_hold_s, _SHIFT_GAP_FACTOR * self._low_gap_s), self._window_s / 2.0
        )

    def _anomaly(self, x: float, y: float, u: float, r: float) -> None:
        kind = 1 if r > self._stall_tol_s and u >= self._u_last - self._back_tol_s else 2
        if kind == 1:
            self._floor_high = True
        if kind != self._run_kind:
            if self._run_kind:
                self._end_run()
            self._run_kind = kind
        if not self._run_n:
            self._run_first_x = x
        self._run.append((x, y))  # bounded: only the latest are replayed
        self._run_n += 1
        confirmed = self._run_n >= self._confirm_n and (
            kind == 2 or x - self._run_first_x >= self._stall_hold_s()
        )
        if confirmed:
            replay = list(self._run)
            self._restart()
            self._resets += 1
            self._discontinuities += 1
            for px, py in replay:
                self.observe(px, py)

    def _end_run(self, u_next: float = math.nan) -> None:
        # A stall that drained (or a lone corrupt timestamp): its packets say nothing
        # about the floor, but they were received.
        if self._run_kind == 1:
            self._n += self._run_n
            self._last_arrival_s = self._run[-1][1]
        early = list(self._run) if self._run_kind == 2 else []
        self._run.clear()
        self._run_kind = 0
        self._run_n = 0
        for x, y in early:
            # Too early for the line, yet in order with the packets around it and by less
            # than a batching delay: the line was above the floor, not the packet wrong.
            # Sparse frames do this: an H10's ACC frames can sit 25 ms late for minutes
            # and set the first line; the ECG frame that later comes 10 ms under it is
            # the floor (measured: dropped as corrupt, the map stayed 10 ms late).
            u = x - self._x0
            r = y - (self._base + self._slope * u)
            if (
                r >= -self._stall_tol_s
                and u >= self._u_last - self._back_tol_s
                and u <= u_next + self._back_tol_s
            ):
                self._accept(u, y, r, math.nan)

    def observe_sync(self, host_send_s: float, device_time_s: float, host_recv_s: float) -> None:
        """A time-sync exchange: the device read `device_time_s` between send and receive."""
        if not host_send_s <= host_recv_s:
            raise ValueError(
                f"host_send_s={host_send_s} > host_recv_s={host_recv_s}: the ping must be "
                "sent before its answer is received; pass the host monotonic times in order"
            )
        if self._n == 0:
            self._begin(device_time_s, host_recv_s)
        else:
            r = host_recv_s - (self._base + self._slope * (device_time_s - self._x0))
            # A slow answer is a loose upper bound, not a stall to confirm as a clock step;
            # its lower bound (the send time) is what counts then.
            if r <= self._stall_tol_s:
                self._observe(device_time_s, host_recv_s, packet=False)
                if self._run_kind:
                    return  # part of a suspected discontinuity: not trusted as a bound yet
        u = device_time_s - self._x0
        if self._sync_n == _SYNC_CAP:
            self._sync_start = (self._sync_start + 1) % _SYNC_CAP
            self._sync_n -= 1
        j = (self._sync_start + self._sync_n) % _SYNC_CAP
        self._su[j] = u
        self._sv[j] = host_send_s - self._y0 - u
        self._sw[j] = host_recv_s - self._y0 - u
        self._sync_n += 1
        self._refit(include_live=True)

    # -- fitting -----------------------------------------------------------------------------

    def _close_bin(self, u: float) -> bool:
        """Close the live bin, slide the window, refit. True: the floor has shifted up."""
        shifted = False
        if self._live_key != math.inf and self._fitted:
            # Against the floor of the few seconds before the suspected step (the lowest
            # bin then, never below the envelope), not the window's envelope: while a young
            # slope is off (sparse frames: 100-200 ppm for seconds) the envelope's distance
            # grows with the time to its touching point, up to a window away, and a floor
            # that did not move reads as one that did.
            hold = self._shift_hold()
            t_ref = min(self._high_since, self._live_u)
            ref = local_floor(
                self._bu, self._bv, self._start, self._n_bins, self._d, t_ref - hold, t_ref
            )
            if ref == math.inf:
                ref = self._c_env
            excess = self._live_v - self._d * self._live_u - max(ref, self._c_env)
            if excess <= self._shift_tol_s:
                self._low_gap_s = _peak_hold(  # grows only over high bins (see _accept)
                    self._low_gap_s,
                    self._live_u - self._low_u,
                    self._window_s,
                    grow=self._high_since != math.inf,
                )
                self._high_since = math.inf
                self._low_u = self._live_u
            elif self._high_since == math.inf:
                self._high_since = self._live_u
            elif self._live_u - self._high_since >= hold:
                shifted = True
        if self._live_key != math.inf:
            cap = self._cap
            if self._n_bins == cap - 1:  # never with sane input; keep one slot spare
                self._start = (self._start + 1) % cap
                self._n_bins -= 1
            j = (self._start + self._n_bins) % cap
            self._bu[j] = self._live_u
            self._bv[j] = self._live_v
            self._bwu[j] = self._lw_u
            self._bww[j] = self._live_lower_w()
            self._n_bins += 1
            self._fold_coarse(self._live_u, self._live_v)
        self._live_key = math.inf
        self._lw_key = -math.inf
        self._lw_w = math.nan
        self._live_end = (math.floor(u / self._bin_s) + 1.0) * self._bin_s
        oldest = u - self._window_s
        while self._n_bins > 1 and self._bu[self._start] < oldest:
            self._start = (self._start + 1) % self._cap
            self._n_bins -= 1
        while self._sync_n and self._su[self._sync_start] < oldest:
            self._sync_start = (self._sync_start + 1) % _SYNC_CAP
            self._sync_n -= 1
        self._detect_grid()
        self._refit(include_live=False)
        return shifted

    def _fold_coarse(self, u: float, v: float) -> None:
        """Feed a closed fine bin into the coarse bins of the drift horizon."""
        if u >= self._clive_end:
            if self._clive_key != math.inf:
                cap = self._ccap
                if self._cn == cap - 1:
                    self._cstart = (self._cstart + 1) % cap
                    self._cn -= 1
                j = (self._cstart + self._cn) % cap
                self._cu[j] = self._clive_u
                self._cv[j] = self._clive_v
                self._cn += 1
            self._clive_key = math.inf
            self._clive_end = (math.floor(u / self._cbin_s) + 1.0) * self._cbin_s
            oldest = u - self._drift_window_s
            while self._cn > 1 and self._cu[self._cstart] < oldest:
                self._cstart = (self._cstart + 1) % self._ccap
                self._cn -= 1
        key = v - self._d * u
        if key < self._clive_key:
            self._clive_key = key
            self._clive_u = u
            self._clive_v = v

    def _refit(self, *, include_live: bool) -> None:
        n = self._n_bins
        if include_live and self._live_key != math.inf:
            j = (self._start + n) % self._cap
            self._bu[j] = self._live_u
            self._bv[j] = self._live_v
            self._bwu[j] = self._lw_u
            self._bww[j] = self._live_lower_w()
            n += 1
        if n == 0:
            return
        first_u = float(self._bu[self._start])
        if self._cn:
            first_u = min(first_u, float(self._cu[self._cstart]))
        span = self._u_last - first_u
        self._fitted = span >= self._min_fit_span_s
        out = self._fit_out
        lim = self._max_drift
        young = span <= self._window_s or self._cn < _MIN_COARSE
        d_long = math.nan
        if not self._fitted:
            d_lo = d_hi = 0.0
        elif young:
            d_lo, d_hi = -lim, lim
        else:
            # Drift from the long horizon (many passes of the BLE/USB phase through zero),
            # offset from the recent window under that drift.
            nc = self._cn
            if self._clive_key != math.inf:
                j = (self._cstart + nc) % self._ccap
                self._cu[j] = self._clive_u
                self._cv[j] = self._clive_v
                nc += 1
            envelope_fit(self._cu, self._cv, self._cstart, nc, -lim, lim, self._hull, out)
            d_long = float(out[1])
            # The bracket still spans every slope: its range then includes slope doubt.
            d_lo, d_hi = -lim, lim
        self._half_s = math.nan
        rng = self._range_out
        self._grid_used = False
        if self._grid_fit(n, d_lo, d_hi, d_long, span):
            return
        bracketed = self._lower_ok() and bool(
            bracket_range(
                self._bu,
                self._bv,
                self._bwu,
                self._bww,
                self._start,
                n,
                d_lo,
                d_hi,
                self._u_last,
                rng,
            )
        )
        if bracketed and young and (rng[2] <= -lim * 0.999 or rng[3] >= lim * 0.999):
            # the feasible slopes run into the drift limit: the lower bounds do not pin the
            # slope (late bounds from a variable host latency: real BLE stacks), so their
            # middle would be the limit itself. Measured through bleak and a fake BlueZ:
            # -300 ppm fitted for -100. Fall back to the envelope alone.
            bracketed = False
        if bracketed:
            d1, d2 = float(rng[2]), float(rng[3])
            d = 0.5 * (d1 + d2) if d_long != d_long else min(max(d_long, d1), d2)
        elif d_long == d_long:
            d = d_long
        elif d_lo == d_hi:
            d = d_lo
        else:
            d = self._young_slope(n)
        envelope_fit(self._bu, self._bv, self._start, n, d, d, self._hull, out)
        c_env = float(out[0])
        c = c_env
        if self._sync_n:
            c = self._sync_offset(c_env, d)
        elif bracketed:
            c = self._bracket_middle(float(rng[0]), float(rng[1]), d, c_env)
        self._set_map(c, d, c_env, span)

    def _bracket_middle(self, lo_now: float, hi_now: float, d: float, c_env: float) -> float:
        """The middle of the values every line between the two sides takes now (never above
        the envelope of slope d); the half-width becomes the offset uncertainty."""
        c = min(0.5 * (lo_now + hi_now) - d * self._u_last, c_env)
        now = c + d * self._u_last
        self._half_s = max(now - lo_now, hi_now - now, 0.0)
        return c

    def _set_map(self, c: float, d: float, c_env: float, span: float) -> None:
        self._c_env = c_env
        self._env_shift = c_env - c
        self._d = d
        self._slope = 1.0 + d
        self._base = self._y0 + c
        self._settled = bool(self._fitted and span >= self._settle_s)

    def _young_slope(self, n: int) -> float:
        """Drift of a young fit from the bin minima (module docstring, item 3)."""
        # Through the lowest bin of each span as long as the link's longest recent gap
        # between bins near the floor: one bin per span on a dense link (nothing
        # changes), a few seconds on sparse frames, where most bins hold only frames
        # locked 25-30 ms late and their minima make a sawtooth, not a floor.
        lim = self._max_drift
        group_s = max(self._bin_s, self._low_gap_s)
        gu, gv = self._gu, self._gv
        m = group_minima(self._bu, self._bv, self._start, n, self._d, group_s, gu, gv)
        d = minima_slope(gu, gv, 0, m, self._work)
        d = shrink_slope(gu, 0, m, self._work, d, _DRIFT_PRIOR)
        return min(max(d, -lim), lim)

    def _grid_fit(self, n: int, d_lo: float, d_hi: float, d_long: float, span: float) -> bool:
        """The map between the arrivals and the grid lower bounds (_grid_bound), when the
        link has an event grid and a line fits between them; False: not used."""
        if self._sync_n or self._grid_iv != self._grid_iv or self._multi >= _MULTI_MIN:
            return False
        rng = self._range_out
        gn = self._gr_n
        if self._gl_end != -math.inf:  # the live grid bin, in the spare slot
            self._gl_store((self._gr_start + gn) % self._cap)
            gn += 1
        args = (self._gru, self._grv, self._grlu, self._grlw, self._gr_start, gn)
        if not bracket_range(*args, d_lo, d_hi, self._u_last, rng):
            # the sides cross: the device does not send at the first event after a
            # packet is complete (it buffers), or the grid is wrong: arrivals alone
            return False
        lim = self._max_drift
        d1, d2 = float(rng[2]), float(rng[3])
        if d_long == d_long:
            d = min(max(d_long, d1), d2)
        elif d_lo == d_hi:
            d = d_lo
        elif d1 > -lim * 0.999 and d2 < lim * 0.999:
            d = 0.5 * (d1 + d2)
        else:
            d = min(max(self._young_slope(n), d1), d2)
        if not bracket_range(*args, d, d, self._u_last, rng):
            return False
        out = self._fit_out
        envelope_fit(self._bu, self._bv, self._start, n, d, d, self._hull, out)
        c_env = float(out[0])
        lo_now, hi_now = float(rng[0]), float(rng[1])
        if hi_now - lo_now > _GRID_WIDTH * self._grid_iv:
            # Packets at few phases of the interval (phase-locked, or not yet seen many):
            # the truth may lie anywhere in the interval and the middle is a guess; the
            # envelope is exact when the phase is zero (an arrival on the tick).
            return False
        c = self._bracket_middle(lo_now, hi_now, d, c_env)
        self._grid_used = True
        self._set_map(c, d, c_env, span)
        return True

    def _sync_offset(self, c_env: float, d: float) -> float:
        """The offset with time-sync in the window (NTP's clock filter, bounded).

        Feasible offsets: [lo, up] with lo the latest send and up the earliest arrival or
        answer (under slope d). Within it, the midpoint of the exchange with the shortest
        round trip: right when the two legs have the same minimum latency (a serial line),
        and clipped to the envelope when they do not (BLE answers wait a whole connection
        interval, so their midpoint is late and the arrivals' envelope is the better bound).
        """
        idx = (self._sync_start + np.arange(self._sync_n)) % _SYNC_CAP
        su = self._su[idx]
        lo_i = self._sv[idx] - d * su
        up_i = self._sw[idx] - d * su
        lo = float(np.max(lo_i))
        up = min(c_env, float(np.min(up_i)))
        if lo > up + self._jump_tol_s:
            # The device read its clock outside [send, receive] by more than the model's
            # own tolerance: its sync answers are not what they claim; use the arrivals.
            self._sync_rejected += 1
            return c_env
        best = int(np.argmin(up_i - lo_i))
        mid = 0.5 * float(lo_i[best] + up_i[best])
        c = min(max(mid, lo), up) if lo <= up else 0.5 * (lo + up)
        self._half_s = max(c - lo, up - c, 0.0)
        return c

    def _lower_ok(self) -> bool:
        """Use the batch lower bounds? Not with time-sync in the window (it bounds both
        sides better, and a fixed latency would push the lower bounds past the truth), and
        only when most batches carry several packets. Why: a packet waits less than the
        smaller of its own duration and the batch interval for its batch, while its lower
        bound is loose by at least (packet duration - batch interval) when that is
        positive: with one packet per batch or fewer the envelope is the sharper side and
        a middle would only move away from it (measured: 7.5 ms events, 15.6 ms packets).
        """
        return not self._sync_n and self._multi >= _MULTI_MIN

    # -- mapping -----------------------------------------------------------------------------

    def _need_data(self) -> None:
        if self._n == 0 and not self._run:
            raise RuntimeError(
                "the clock model has no observation yet: call observe() with the packet's "
                "device time and arrival before asking for host times"
            )

    def to_host(self, device_time_s: float) -> float:
        """Host monotonic seconds of a device time (the current fit, extrapolated)."""
        if self._n == 0:
            self._need_data()
        return self._base + self._slope * (device_time_s - self._x0)

    def to_host_array(self, device_time_s: FloatArray, out: FloatArray | None = None) -> FloatArray:
        """`to_host` for a whole block; writes into `out` when given (may be the input).

        One jitted call for a 1-D float64 block (the runtime's case); other shapes and
        dtypes go through numpy.
        """
        if self._n == 0:
            self._need_data()
        x = device_time_s
        if out is None:
            out = np.empty(np.shape(x), dtype=np.float64)
        if (
            isinstance(x, np.ndarray)
            and x.dtype == np.float64
            and x.ndim == 1
            and out.ndim == 1
            and out.shape[0] == x.shape[0]
        ):
            s = self._s  # the slots read directly: a per-block call
            affine_map(x, float(s[ck.S_X0]), float(s[ck.S_SLOPE]), float(s[ck.S_BASE]), out)
            return out
        np.subtract(x, self._x0, out=out)
        out *= self._slope
        out += self._base
        return out

    def to_host_grid(self, first_device_s: float, period_s: float, out: FloatArray) -> FloatArray:
        """Host times of `len(out)` samples `period_s` apart on the device clock, the first
        at `first_device_s`: `to_host_array` of first_device_s + k * period_s (same bits) in
        one jitted call, without the device times. `out`: 1-D float64, C-contiguous."""
        if self._n == 0:
            self._need_data()
        grid_map(first_device_s, period_s, self._x0, self._slope, self._base, out)
        return out

    def block_times(
        self, first_index: int, n_samples: int, out: FloatArray | None = None
    ) -> FloatArray:
        """Host times of samples `first_index`..+n of a counter-timed stream (index / rate)."""
        rate = self._nominal_rate_hz
        if rate is None:
            raise ValueError("block_times needs nominal_rate_hz: pass it to ClockModel(...)")
        if out is None:
            out = np.empty(n_samples, dtype=np.float64)
        out[:] = np.arange(first_index, first_index + n_samples, dtype=np.float64)
        out /= rate
        return self.to_host_array(out, out)

    def to_device(self, host_s: float) -> float:
        """The inverse map: device seconds at a host time (e.g. to unwrap after a silence)."""
        if self._n == 0:
            self._need_data()
        return self._x0 + (host_s - self._base) / self._slope

    # -- monitoring --------------------------------------------------------------------------

    def stats(self, now_s: float) -> ClockStats:
        """A snapshot for monitoring; `now_s` is the host monotonic time of the question."""
        n = self._n_bins
        span = 0.0
        unc_s = math.nan
        if n:
            idx = (self._start + np.arange(n)) % self._cap
            u = self._bu[idx]
            span = max(float(u[-1]), float(self._u_last)) - float(u[0])
            if self._half_s == self._half_s:
                unc_s = self._half_s
            else:
                excess = self._bv[idx] - (self._c_env + self._d * u)
                unc_s = float(np.median(excess))
        filled = min(self._n, _JITTER_RING)
        jitter_ms = (
            float(np.percentile(np.asarray(self._jitter[:filled]), 95)) * 1e3 if filled else 0.0
        )
        age_s = float(now_s - self._last_arrival_s) if self._n else math.inf
        rate = self._nominal_rate_hz
        return ClockStats(
            drift_ppm=self._d * 1e6,
            offset_uncertainty_ms=unc_s * 1e3,
            arrival_jitter_ms=jitter_ms,
            model_age_s=age_s,
            n_observations=self._n,
            resets=self._resets,
            settled=self._settled,
            discontinuities=self._discontinuities,
            span_s=span,
            n_sync=self._sync_n,
            sync_rejected=self._sync_rejected,
            effective_rate_hz=None if rate is None else rate / self._slope,
            event_interval_ms=self._grid_iv * 1e3 if self._grid_used else None,
        )
