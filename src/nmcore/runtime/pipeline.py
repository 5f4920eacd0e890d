"""Per-stream ingestion: counters -> absolute indices -> device time -> host time -> ring.

This is the only place that joins the streaming stages; each stage stays ignorant of the
others. `ingest` is synchronous and cheap (a handful of jitted calls per block) and runs on
the event loop; it never blocks.

A stream may carry a fused consumer (`StreamState.chain`, set by the trial engine for the EMG
stream): its steady-state blocks then go through one jitted call that pushes into the ring
and runs the EMG chain (`_ingest_kernels.ingest_push_chain`); `chain_events` tells the
listener that the chain already ran on this block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from nmcore.buffer.ring import PushResult, RingBuffer, RingState, fits_entry_points
from nmcore.buffer.sequence import SequenceTracker
from nmcore.clock import ClockModel, TickUnwrapper
from nmcore.model import Event, SampleBlock, StreamDescriptor
from nmcore.runtime._ingest_kernels import entry_point_for, state_table

__all__ = ["Pipeline", "StreamCounters", "StreamState"]

log = logging.getLogger("nmcore.runtime.pipeline")


@dataclass(slots=True)
class StreamCounters:
    blocks: int = 0
    samples: int = 0
    missing_samples: int = 0
    duplicate_samples: int = 0
    late_samples: int = 0
    rejected_samples: int = 0
    gaps: int = 0
    resets: int = 0
    fused_blocks: int = 0  # blocks pushed and run through the EMG chain in one jitted call


@dataclass(slots=True)
class StreamState:
    desc: StreamDescriptor
    ring: RingBuffer
    tracker: SequenceTracker
    clock: ClockModel
    unwrapper: TickUnwrapper | None
    period_s: float
    counters: StreamCounters = field(default_factory=StreamCounters)
    # calibration: y = matrix @ (x - cal_offsets), per sample; then the tare `offsets`
    cal_offsets: np.ndarray | None = None
    cal_matrix: np.ndarray | None = None
    offsets: np.ndarray | None = None  # subtracted from every sample (tare), per channel
    # the EMG detector's (work, istate, hist) when its chain runs inside the push kernel
    chain: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    # events the fused chain raised in the block being handed to listeners; -1: it did not
    # run (the listener then feeds the detector itself); the consumer resets it to -1
    chain_events: int = -1
    # scratch for per-block host times, grown on demand (no allocation per block)
    _host_t: np.ndarray = field(default_factory=lambda: np.empty(0))
    _ring_args: RingState = field(init=False)
    # the fused call bound to `chain`: (entry point, state table, ring arrays, chain arrays),
    # rebuilt when `chain` is replaced (`_bound_chain` is the chain it was built for); the
    # table holds the arrays' raw addresses, so the arrays are kept alive beside it
    _fused: tuple[Any, ...] | None = field(init=False, default=None)
    _bound_chain: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(init=False, default=None)
    _pushed_by_kernel: Callable[[int, int], PushResult] = field(init=False)

    def push_chain(self, first_index: int, data: np.ndarray, t_s: np.ndarray) -> PushResult:
        """Push a block; with a `chain`, in one jitted call that also runs the EMG chain on
        it when the block continues both the ring and the detector (`chain_events` >= 0
        then). Otherwise the ring's own push (a gap, an overlap, no chain, a block of
        another array type).

        The fused call goes to the compiled entry point directly (numba's dispatch would
        type every argument per block); so the two arrays that change per block are
        checked here to be the compiled type (`buffer.ring.fits_entry_points`). The ring's
        and the chain's arrays were checked once, when the chain was bound, and reach the
        kernel as one table of their addresses (`_ingest_kernels.state_table`)."""
        fused = self._fused
        if self.chain is not self._bound_chain:
            fused = self._bind_chain()
        if fused is not None and fits_entry_points(first_index, data, t_s):
            events: int = fused[0](fused[1], first_index, data, t_s)
            self.chain_events = events
            if events >= 0:
                self.counters.fused_blocks += 1
                return self._pushed_by_kernel(first_index, len(data))
        return self.ring.push(first_index, data, t_s)

    def fused_call(self) -> tuple[Any, ...] | None:
        """(compiled entry point, state table, ring arrays, chain arrays): `push_chain` calls
        `entry(table, first_index, data, t_s)`; None without a chain. For benchmarks and
        tests that time the jitted call alone (keep the tuple while using the table)."""
        if self.chain is not self._bound_chain:
            return self._bind_chain()
        return self._fused

    def _bind_chain(self) -> tuple[Any, ...] | None:
        """Type the ring's and the chain's arrays once and keep the matching compiled entry
        point (compiling it now if needed, outside the per-block path)."""
        chain = self.chain
        # unbound first: if typing the new chain raises, no later block may run the old one
        self._fused = None
        self._bound_chain = None
        if chain is None:
            self._bound_chain = chain
            return None
        ring = self._ring_args
        table = state_table(*ring, *chain)
        block = np.empty((1, self.ring.n_channels))  # the block types the kernel runs on
        entry = entry_point_for((table, 0, block, np.empty(1)))
        self._fused = (entry, table, ring, chain)
        self._bound_chain = chain
        return self._fused

    def __post_init__(self) -> None:
        # the ring's arrays never move: unpacked once, not per block
        self._ring_args = self.ring.state
        self._pushed_by_kernel = self.ring.pushed_by_kernel


BlockListener = Callable[[StreamState, int, int], None]


class SampleRecorder(Protocol):
    """What the pipeline hands every admitted block to (`record.SessionRecorder` fits)."""

    def write_samples(
        self,
        stream: StreamDescriptor,
        first_index: int,
        data: np.ndarray,
        t_s: np.ndarray,
        valid: None = None,
        *,
        counter: int | None = None,
        device_ticks: int | None = None,
        ticks_index: int = 0,
    ) -> Any: ...


class Pipeline:
    """Holds every stream's state. Listeners are told (stream, first_index, n) after a push."""

    def __init__(
        self,
        descriptors: Sequence[StreamDescriptor],
        *,
        history_s: float,
        emit: Callable[[Event], None],
        clock_window_s: float = 60.0,
    ) -> None:
        self._emit = emit
        self.clocks: dict[str, ClockModel] = {}
        self.unwrappers: dict[str, TickUnwrapper] = {}
        self.streams: dict[str, StreamState] = {}
        self._listeners: list[BlockListener] = []
        # gets each block's kept samples right after the ring push (data as pushed, tare
        # applied; host times; the first kept sample's raw counter and the block's ticks)
        self.recorder: SampleRecorder | None = None
        for desc in descriptors:
            clock = self.clocks.setdefault(
                desc.device_id, ClockModel(window_s=clock_window_s, nominal_rate_hz=desc.rate_hz)
            )
            # one unwrapper per device clock: a stream that starts after the clock wrapped
            # must land in the same wrap count as its siblings
            unwrapper = (
                self.unwrappers.setdefault(
                    desc.device_id, TickUnwrapper(desc.timestamp_bits, desc.timestamp_hz)
                )
                if desc.timestamp_hz
                else None
            )
            self.streams[desc.stream_id] = StreamState(
                desc=desc,
                ring=RingBuffer.for_history(desc.n_channels, desc.rate_hz, history_s),
                tracker=SequenceTracker(desc.counter_bits),
                clock=clock,
                unwrapper=unwrapper,
                period_s=1.0 / desc.rate_hz,
            )

    def observe_sync(
        self,
        device_id: str,
        host_send_s: float,
        device_ticks: int,
        hold_s: float,
        host_recv_s: float,
    ) -> None:
        """A time-sync exchange: the device read its clock (`device_ticks`, raw) on receipt
        and answered `hold_s` later; both bounds go to the device's clock model."""
        unwrap = self.unwrappers.get(device_id)
        clock = self.clocks.get(device_id)
        if unwrap is None or clock is None:
            return
        clock.observe_sync(host_send_s, unwrap.seconds(device_ticks) + 0.5 * hold_s, host_recv_s)

    def device_to_host(self, device_id: str, device_ticks: int) -> float | None:
        """Host time of a raw device timestamp (e.g. a trigger edge the device time-stamped)."""
        unwrap = self.unwrappers.get(device_id)
        clock = self.clocks.get(device_id)
        if unwrap is None or clock is None:
            return None
        try:
            return clock.to_host(unwrap.seconds(device_ticks))
        except RuntimeError:  # no observation yet: nothing to map with
            return None

    def add_listener(self, listener: BlockListener) -> None:
        self._listeners.append(listener)

    def set_correction(
        self, stream_id: str, offsets: np.ndarray, matrix: np.ndarray | None
    ) -> None:
        """Apply a calibration to every new sample: y = matrix @ (x - offsets)."""
        st = self.streams[stream_id]
        c = st.desc.n_channels
        off = np.asarray(offsets, dtype=np.float64).reshape(c).copy()
        m = None
        if matrix is not None:
            m = np.asarray(matrix, dtype=np.float64).reshape(c, c)
            # transposed once here: the block product is then data @ m_t
            m = None if np.array_equal(m, np.eye(c)) else np.ascontiguousarray(m.T)
        st.cal_offsets, st.cal_matrix = off, m

    def tare(self, stream_id: str, raw_mean: np.ndarray) -> np.ndarray:
        """Zero a stream: `raw_mean` is the mean of what it reads now (already net of any
        earlier tare); returns the total offset now subtracted from every new sample."""
        st = self.streams[stream_id]
        total = raw_mean if st.offsets is None else st.offsets + raw_mean
        st.offsets = np.asarray(total, dtype=np.float64).copy()
        return st.offsets

    def ingest(self, block: SampleBlock) -> None:
        st = self.streams.get(block.stream_id)
        if st is None:
            raise KeyError(f"block for undeclared stream {block.stream_id!r}")  # a driver bug
        n = block.n_samples
        if n == 0:
            return
        c = st.counters
        c.blocks += 1
        adm = st.tracker.admit(block.counter, n)
        if adm.kind == "reset":
            c.resets += 1
            self._emit(Event("device_reset", block.arrival_s, st.desc.stream_id, {}))
        if adm.kind == "out_of_order":
            c.late_samples += adm.skip  # already counted missing: the stream moved on
        else:
            c.duplicate_samples += adm.skip
        n_keep = adm.n_keep
        if n_keep <= 0:
            return
        skip = adm.skip
        # the usual block is kept whole: no slice object to build
        data = block.data if skip == 0 and n_keep == n else block.data[skip : skip + n_keep]
        if st.cal_offsets is not None:
            data = data - st.cal_offsets
            if st.cal_matrix is not None:
                data = data @ st.cal_matrix
        if st.offsets is not None:
            data = data - st.offsets

        period_s = st.period_s
        if st.unwrapper is not None and block.device_ticks is not None:
            t_ref = st.unwrapper.seconds(block.device_ticks)
            first_dev_s = t_ref - (block.ticks_index - skip) * period_s
        else:
            first_dev_s = adm.first_index * period_s
        if block.host_t_s is not None:
            host_t = block.host_t_s[skip : skip + n_keep]
        else:
            if st._host_t.shape[0] < n_keep:
                st._host_t = np.empty(max(n_keep, 64))
            # The arrival bounds the device time of the last sample that arrived. A block of
            # joined packets: the ends of the kept packets before it too, as if they had come
            # one by one (the model was built on per-packet observations); the first kept
            # packet's end is at kept index (packet - 1 - skip) mod packet.
            last = n_keep - 1
            packet = block.packet_samples
            k0, step = ((packet - 1 - skip) % packet, packet) if 0 < packet < n else (last, 1)
            host_t = st.clock.observe_block(
                first_dev_s, period_s, k0, step, last, block.arrival_s, st._host_t[:n_keep]
            )

        res = st.push_chain(adm.first_index, data, host_t)
        rec = self.recorder
        if rec is not None and res.written:
            k = res.rejected_samples
            counter = block.counter + skip + k
            if st.desc.counter_bits:
                counter %= 1 << st.desc.counter_bits
            rec.write_samples(
                st.desc,
                adm.first_index + k,
                data[k:],
                host_t[k:],  # a reused scratch buffer: write_samples copies
                counter=counter,
                device_ticks=block.device_ticks,
                ticks_index=block.ticks_index - skip - k,
            )
        c.samples += res.written
        c.rejected_samples += res.rejected_samples
        missing = max(adm.gap_samples, res.gap_samples)
        if missing:
            c.missing_samples += missing
            c.gaps += 1
            start_index = adm.first_index - missing
            self._emit(
                Event(
                    "gap",
                    float(host_t[0]),
                    st.desc.stream_id,
                    {
                        "stream_id": st.desc.stream_id,
                        "first_index": start_index,
                        "missing_samples": missing,
                        "start_s": float(host_t[0]) - missing * st.period_s,
                        "end_s": float(host_t[0]),
                    },
                )
            )
        for listener in self._listeners:
            listener(st, adm.first_index, res.written)
