"""A simulated device: its crystal and clock, sample counters, packets, transport timing and
faults. Signal generators (platform, EMG, force plate, IMU) plug in per stream.

Time model (world time = the host clock's base, seconds):

- The device powers on at `t_on` (its first `open`). Sample n of a stream of nominal rate r is
  taken at t_n = t_on + n / (r (1 + drift)): a fast crystal (drift > 0) samples fast.
- The device clock reads D(t) = offset_s + (1 + drift)(t - t_on), so D(t_n) = offset_s + n/r
  exactly; the timestamp of a packet is floor(D * timestamp_hz) of its first sample, modulo
  2**timestamp_bits. The counter is n modulo 2**counter_bits.
- A reset (reboot) at t_r: samples stop; after `reboot_s` the counter and the device clock
  restart at 0 (D = (n - n_resume)/r). The sample grid keeps its phase (same crystal).
- Samples are grouped into packets of `packet_samples`. A packet is complete when its last
  sample is taken; the transport delivers complete packets at delivery events:
  ideal: at completion; serial: USB latency-timer bursts every `serial_latency_ms` (+ jitter);
  ble: connection events every `ble_interval_ms`, at most `ble_max_packets_per_event`
  notifications per stream each, some events missed (the batch waits for the next one).
  Arrival time = delivery event time, never before the samples exist. A serial delivery
  joins its contiguous packets into one block (`join_packets`), as a serial driver decodes
  one read into one block per run; a BLE one gives a block per notification.
- Link outages (`disconnect_after_s` of link up, then `disconnect_duration_s` down, repeating):
  the driver raises DeviceGoneError at the outage start; the device keeps sampling; packets
  not delivered before the outage and those completed before the next `open` are lost.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nmcore.errors import ConfigError, DeviceGoneError
from nmcore.model import SampleBlock, StreamDescriptor
from nmcore.sim.scenario import Scenario, ScenarioOptions, device_rng

__all__ = [
    "ClockOptions",
    "FaultOptions",
    "Generator",
    "SimDevice",
    "SimDeviceOptions",
    "TransportOptions",
    "check_transport",
    "device_key",
    "packet_samples_for",
]

FloatArray = npt.NDArray[np.float64]
# (global index of the first sample, world times of the samples) -> (n, n_channels) data
Generator = Callable[[int, FloatArray], FloatArray]

_INDEX_EPS = 1e-6  # samples: keeps floor() from missing a sample taken exactly at time t
_PACKET_S = 0.008  # default packet length: 8 ms of samples (8 at 1 kHz, 16 at 2 kHz)
_BLE_HEADROOM = 1.25  # a BLE event must carry 25 % more than one interval of data to catch up
_CHUNK_S = 0.25  # generators run this far ahead at most (see _Stream._generate)


class ClockOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    offset_s: float = Field(0.0, ge=0.0, description="device clock reading at power-on")
    drift_ppm: float = Field(0.0, ge=-200.0, le=200.0, description="crystal error; + is fast")
    counter_bits: int = Field(16, ge=4, le=62, description="sample counter wraps at 2**bits")
    timestamp_hz: float = Field(1e6, ge=0.0, le=1e9, description="0: counter-only device")
    timestamp_bits: int = Field(32, ge=8, le=62)


class TransportOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["ideal", "serial", "ble"] = "serial"
    packet_samples: int | None = Field(
        None, ge=1, le=10_000, description="samples per packet; None: 8 ms worth"
    )
    serial_latency_ms: float = Field(16.0, ge=1.0, le=255.0, description="USB latency timer")
    serial_jitter_ms: float = Field(0.5, ge=0.0, le=10.0)
    ble_interval_ms: float = Field(15.0, ge=7.5, le=50.0, description="connection interval")
    ble_missed_event_prob: float = Field(0.02, ge=0.0, le=0.5)
    ble_max_packets_per_event: int = Field(
        16, ge=1, le=64, description="notifications per connection event (DLE, 2M PHY)"
    )
    ble_jitter_ms: float = Field(0.3, ge=0.0, le=5.0, description="host stack delay, uniform")
    join_packets: bool | None = Field(
        None,
        description=(
            "deliver the contiguous packets of one delivery event as one block, as the serial "
            "drivers do with one read; None: yes for serial, no for ble (one notification, "
            "one block, as the BLE driver) and ideal"
        ),
    )

    @property
    def joins_packets(self) -> bool:
        return self.kind == "serial" if self.join_packets is None else self.join_packets


class FaultOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    drop_packet_prob: float = Field(0.0, ge=0.0, le=0.5)
    corrupt_packet_prob: float = Field(
        0.0, ge=0.0, le=0.5, description="a bad CRC: the packet is discarded (counted as lost)"
    )
    disconnect_after_s: float | None = Field(
        None, gt=0.0, description="link up this long, then an outage (repeats)"
    )
    disconnect_duration_s: float = Field(2.0, gt=0.0, le=3600.0)
    reset_after_s: float | None = Field(
        None, gt=0.0, description="one reboot, this long after power-on"
    )
    reboot_s: float = Field(0.5, ge=0.0, le=60.0, description="no samples while rebooting")


class SimDeviceOptions(BaseModel):
    """Options every simulated device shares (its own model adds the signal options)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: ScenarioOptions = ScenarioOptions()
    clock: ClockOptions = ClockOptions()
    transport: TransportOptions = TransportOptions()
    faults: FaultOptions = FaultOptions()

    def truth_errors(self, device_id: str) -> dict[str, Any]:
        """The sensor errors a calibration should recover (device models add theirs)."""
        return {}

    @model_validator(mode="after")
    def _faults_fit(self) -> SimDeviceOptions:
        f = self.faults
        if f.drop_packet_prob + f.corrupt_packet_prob > 0.5:
            raise ValueError("faults: drop_packet_prob + corrupt_packet_prob must be <= 0.5")
        return self


def device_key(device_id: str) -> str:
    """Where a simulated device's running state lives in `DriverContext.shared`."""
    return f"sim.device.{device_id}"


def packet_samples_for(desc: StreamDescriptor, tr: TransportOptions) -> int:
    return tr.packet_samples or max(1, round(desc.rate_hz * _PACKET_S))


def check_transport(
    device_id: str, tr: TransportOptions, descriptors: Sequence[StreamDescriptor]
) -> None:
    """A BLE link must carry more than the stream produces, or the backlog grows forever."""
    if tr.kind != "ble":
        return
    for desc in descriptors:
        p = packet_samples_for(desc, tr)
        per_interval = desc.rate_hz * tr.ble_interval_ms / 1000.0
        if tr.ble_max_packets_per_event * p < _BLE_HEADROOM * per_interval:
            raise ConfigError(
                "invalid configuration",
                [
                    f"devices.{device_id}.options.transport: {desc.stream_id} produces "
                    f"{per_interval:.0f} samples per BLE interval but an event carries at "
                    f"most {tr.ble_max_packets_per_event} x {p}; raise "
                    "ble_max_packets_per_event or packet_samples, or shorten ble_interval_ms"
                ],
            )


class _Stream:
    """Sampling, packetising and fault decisions of one stream."""

    def __init__(
        self,
        device: SimDevice,
        desc: StreamDescriptor,
        packet_samples: int,
        rng: np.random.Generator,
    ) -> None:
        self.device = device
        self.desc = desc
        self.rate_hz = desc.rate_hz
        self.k_hz = desc.rate_hz * (1.0 + device.drift)  # true sampling rate
        self.P = packet_samples
        self.rng = rng
        self.gen: Generator | None = None
        clk = device.options.clock
        self.counter_mask = (1 << desc.counter_bits) - 1
        self.ticks_mask = (1 << clk.timestamp_bits) - 1
        self.ticks_per_sample = clk.timestamp_hz / desc.rate_hz
        self.has_ticks = clk.timestamp_hz > 0
        self.n_gen = 0
        self.seg_start = 0
        self.seg_ticks0 = round(clk.offset_s * clk.timestamp_hz)
        self.pkt_start = 0
        self.partial = np.empty((0, desc.n_channels))
        self.cache = np.empty((0, desc.n_channels))
        self.cache_n0 = 0
        self.chunk = max(1, round(desc.rate_hz * _CHUNK_S))
        # complete packets not yet delivered: (first index, block without its arrival time,
        # counter segment: a reset starts a new one, and packets join only within one)
        self.pending: deque[tuple[int, SampleBlock, int]] = deque()
        self.join = device.options.transport.joins_packets
        self.reset: tuple[int, int] | None = None  # (first index not taken, resume index)
        self.samples_delivered = 0
        self.packets_delivered = 0

    def time_of(self, n: int) -> float:
        """True (world) time of sample n."""
        return self.device.t_on + n / self.k_hz

    def index_at(self, t_s: float) -> int:
        """The first sample index taken at or after `t_s`."""
        return max(0, math.ceil((t_s - self.device.t_on) * self.k_hz - _INDEX_EPS))

    def count_until(self, t_s: float) -> int:
        """How many samples have been taken by `t_s` (t_n <= t_s)."""
        if t_s < self.device.t_on:
            return 0
        return math.floor((t_s - self.device.t_on) * self.k_hz + _INDEX_EPS) + 1

    def next_completion_s(self) -> float:
        last = self.pkt_start + self.P - 1
        if self.reset is not None and last >= self.reset[0] and self.pkt_start < self.reset[1]:
            last = self.reset[1] + self.P - 1
        return self.time_of(last)

    def counter_of(self, n: int) -> int:
        return (n - self.seg_start) & self.counter_mask

    def _generate(self, n1: int) -> FloatArray:
        """Samples [n_gen, n1). Generators run ahead in chunks of at least `_CHUNK_S` (one
        vectorised call per chunk instead of one per delivery event); the scenario is fixed
        in advance, so the data do not depend on the chunking."""
        assert self.gen is not None
        cache_end = self.cache_n0 + self.cache.shape[0]
        if n1 > cache_end:
            n_new = max(n1 - cache_end, self.chunk)
            t = self.device.t_on + np.arange(cache_end, cache_end + n_new) / self.k_hz
            fresh = self.gen(cache_end, t)
            keep = self.cache[self.n_gen - self.cache_n0 :]
            self.cache = np.concatenate([keep, fresh]) if keep.shape[0] else fresh
            self.cache_n0 = self.n_gen
        data = self.cache[self.n_gen - self.cache_n0 : n1 - self.cache_n0]
        self.n_gen = n1
        return data

    def advance_to(self, t_s: float, lost_cause: str | None) -> None:
        """Take every sample up to `t_s`; complete packets go to `pending` (or are lost as
        `lost_cause`)."""
        target = self.count_until(t_s)
        while self.n_gen < target:
            if self.reset is not None and self.n_gen >= self.reset[0]:
                n_res = self.reset[1]
                stop = min(target, n_res)
                self._generate(stop)  # the body keeps moving while the device reboots
                if stop == n_res:
                    self.seg_start = self.pkt_start = n_res
                    self.seg_ticks0 = 0
                    self.partial = self.partial[:0]
                    self.reset = None
                continue
            stop = target if self.reset is None else min(target, self.reset[0])
            self._chop(self._generate(stop), lost_cause)
            if self.reset is not None and self.n_gen == self.reset[0]:
                n_res = self.reset[1]
                self.device.loss(self, "reset", self.pkt_start, n_res - self.pkt_start)
                self.partial = self.partial[:0]
                self.pkt_start = n_res

    def _chop(self, data: FloatArray, lost_cause: str | None) -> None:
        buf = np.concatenate([self.partial, data]) if self.partial.shape[0] else data
        P = self.P
        n_full = buf.shape[0] // P
        if n_full:
            faults = self.device.options.faults
            p_drop, p_crc = faults.drop_packet_prob, faults.corrupt_packet_prob
            draws = (
                self.rng.random(n_full).tolist()
                if (p_drop or p_crc) and lost_cause is None
                else None
            )
            rel0 = self.pkt_start - self.seg_start
            sid = self.desc.stream_id
            ticks0, tps, tmask = self.seg_ticks0, self.ticks_per_sample, self.ticks_mask
            cmask = self.counter_mask
            append = self.pending.append
            for j in range(n_full):
                rel = rel0 + j * P
                n0 = self.seg_start + rel
                if lost_cause is not None:
                    self.device.loss(self, lost_cause, n0, P)
                    continue
                if draws is not None and draws[j] < p_drop + p_crc:
                    self.device.loss(self, "drop" if draws[j] < p_drop else "crc", n0, P)
                    continue
                ticks = (ticks0 + math.floor(rel * tps + 1e-9)) & tmask if self.has_ticks else None
                block = SampleBlock(sid, rel & cmask, buf[j * P : (j + 1) * P], 0.0, ticks)
                append((n0, block, self.seg_start))
            self.pkt_start += n_full * P
        rest = buf[n_full * P :]
        self.partial = rest  # a view: chunks are never written after generation

    def deliver(self, arrival_s: float, max_packets: int | None, out: list[SampleBlock]) -> None:
        n = len(self.pending) if max_packets is None else min(max_packets, len(self.pending))
        if n == 0:
            return
        pop = self.pending.popleft
        if not self.join:
            for _ in range(n):
                block = pop()[1]
                block.arrival_s = arrival_s
                out.append(block)
        else:
            # runs of packets that continue each other (no loss, no reset between)
            P = self.P
            run: list[SampleBlock] = []
            end = seg = -1
            for _ in range(n):
                n0, block, s = pop()
                if run and (n0 != end or s != seg):
                    out.append(self._joined(run, arrival_s))
                    run = []
                run.append(block)
                end, seg = n0 + P, s
            out.append(self._joined(run, arrival_s))
        self.samples_delivered += n * self.P
        self.packets_delivered += n

    @staticmethod
    def _joined(run: list[SampleBlock], arrival_s: float) -> SampleBlock:
        """One block of a run of packets (all of one size): the first one's counter and
        device timestamp."""
        block = run[0]
        if len(run) > 1:
            block.packet_samples = block.n_samples
            block.data = np.concatenate([b.data for b in run])
        block.arrival_s = arrival_s
        return block


class SimDevice:
    """The device state that survives `close`/`open`: it keeps running while disconnected."""

    def __init__(
        self,
        device_id: str,
        options: SimDeviceOptions,
        descriptors: Sequence[StreamDescriptor],
        scenario: Scenario,
        t_on_s: float,
        truth_sink: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.device_id = device_id
        self.options = options
        self.scenario = scenario
        self.sink = truth_sink
        self.t_on = t_on_s
        self.drift = options.clock.drift_ppm * 1e-6
        seed = options.scenario.seed
        tr = options.transport
        self.streams: list[_Stream] = []
        check_transport(device_id, options.transport, descriptors)
        for desc in descriptors:
            p = packet_samples_for(desc, tr)
            rng = device_rng(seed, device_id, f"faults:{desc.stream_id}")
            self.streams.append(_Stream(self, desc, p, rng))
        self._tx_rng = device_rng(seed, device_id, "transport")
        if tr.kind == "serial":
            self._period_s = tr.serial_latency_ms / 1000.0
            self._jitter_s = tr.serial_jitter_ms / 1000.0
        elif tr.kind == "ble":
            self._period_s = tr.ble_interval_ms / 1000.0
            self._jitter_s = tr.ble_jitter_ms / 1000.0
        else:
            self._period_s = 0.0
            self._jitter_s = 0.0
        self._phase_s = float(self._tx_rng.uniform(0.0, self._period_s))
        self._event_m = 0
        self._draws: list[float] = []
        self._p_miss = tr.ble_missed_event_prob if tr.kind == "ble" else 0.0
        self._next_event_s: float | None = None
        self.missed_events = 0
        self.last_t_s = t_on_s
        f = options.faults
        self.has_outages = f.disconnect_after_s is not None
        if f.reset_after_s is not None:
            t_r = t_on_s + f.reset_after_s
            for s in self.streams:
                s.reset = (s.index_at(t_r), s.index_at(t_r + f.reboot_s))
        # (world time the output line went high, pulse length s): the loopback test pulses
        # a trigger generator mixes into its line (see `nmcore.sim.bench`)
        self.output_pulses: list[tuple[float, float]] = []
        self.losses: list[dict[str, Any]] = []
        self._reset_recorded = False
        self.outages_recorded = 0
        clk = options.clock
        self.record(
            {
                "type": "clock",
                "device_id": device_id,
                "t_start_s": t_on_s,
                "drift_ppm": clk.drift_ppm,
                "device_time_at_start_s": clk.offset_s,
                "timestamp_hz": clk.timestamp_hz,
                "timestamp_bits": clk.timestamp_bits,
                "counter_bits": clk.counter_bits,
                "transport": tr.kind,
                "streams": {
                    s.desc.stream_id: {
                        "rate_hz": s.rate_hz,
                        "true_rate_hz": s.k_hz,
                        "packet_samples": s.P,
                    }
                    for s in self.streams
                },
            }
        )

    # -- device clock ------------------------------------------------------------------------
    def generated_until_s(self) -> float:
        """World time of the first sample no stream has generated yet: what the generators
        produce from here on may still change; everything before it is fixed."""
        return max(s.time_of(s.cache_n0 + s.cache.shape[0]) for s in self.streams)

    def clock_reading(self, t_s: float, stream_index: int = 0) -> tuple[float, int | None]:
        """The device clock at world time `t_s` as the timestamps of stream `stream_index`
        count it: (seconds, raw ticks modulo 2**timestamp_bits, None on a counter-only
        device). After a reset the clock restarts at 0 with the stream's first sample."""
        s = self.streams[stream_index]
        clk = self.options.clock
        f = self.options.faults
        scale = 1.0 + self.drift
        if f.reset_after_s is not None and t_s >= self.t_on + f.reset_after_s:
            t_resume = s.time_of(s.index_at(self.t_on + f.reset_after_s + f.reboot_s))
            if t_s < t_resume:
                raise DeviceGoneError("the device is rebooting (simulated reset)", self.device_id)
            rel_s = (t_s - t_resume) * scale
            device_s, ticks0 = rel_s, 0
        else:
            rel_s = (t_s - self.t_on) * scale
            device_s = clk.offset_s + rel_s
            ticks0 = round(clk.offset_s * clk.timestamp_hz)
        if clk.timestamp_hz <= 0:
            return device_s, None
        # whole ticks since the segment start, as the packet timestamps count them; the slack
        # absorbs the rounding of world time (a sample time gives its packet's ticks)
        ticks = ticks0 + math.floor(rel_s * clk.timestamp_hz + 1e-6)
        return device_s, ticks & ((1 << clk.timestamp_bits) - 1)

    # -- truth -------------------------------------------------------------------------------
    def record(self, rec: dict[str, Any]) -> None:
        self.scenario.record(rec, self.sink)

    def loss(self, stream: _Stream, cause: str, n0: int, n: int) -> None:
        if cause == "reset" and not self._reset_recorded:
            self._reset_recorded = True
            f = self.options.faults
            assert f.reset_after_s is not None
            self.record(
                {
                    "type": "reset",
                    "device_id": self.device_id,
                    "t_s": self.t_on + f.reset_after_s,
                    "resume_t_s": self.t_on + f.reset_after_s + f.reboot_s,
                }
            )
        rec = {
            "type": "loss",
            "cause": cause,
            "device_id": self.device_id,
            "stream_id": stream.desc.stream_id,
            "first_counter": stream.counter_of(n0),
            "first_index": n0,
            "n_samples": n,
            "t_s": stream.time_of(n0),
        }
        last = self.losses[-1] if self.losses else None
        # an outage is one gap per stream: merge its consecutive packets into one record
        if (
            cause == "outage"
            and last is not None
            and last["cause"] == "outage"
            and last["stream_id"] == rec["stream_id"]
            and last["first_index"] + last["n_samples"] == n0
        ):
            last["n_samples"] += n
            return
        self.losses.append(rec)

    def _flush_losses(self) -> None:
        for rec in self.losses:
            self.record(rec)
        self.losses.clear()

    # -- link --------------------------------------------------------------------------------
    def _down_window(self, j: int) -> tuple[float, float]:
        f = self.options.faults
        assert f.disconnect_after_s is not None
        start = (
            self.t_on + f.disconnect_after_s + j * (f.disconnect_after_s + f.disconnect_duration_s)
        )
        return start, start + f.disconnect_duration_s

    def next_outage(self, after_s: float) -> tuple[float, float] | None:
        """The first outage starting after `after_s`."""
        f = self.options.faults
        if f.disconnect_after_s is None:
            return None
        cycle = f.disconnect_after_s + f.disconnect_duration_s
        j = max(0, math.floor((after_s - self.t_on - f.disconnect_after_s) / cycle))
        while True:
            start, end = self._down_window(j)
            if start > after_s:
                return start, end
            j += 1

    def link_down_until(self, t_s: float) -> float | None:
        """End of the outage in progress at `t_s`, or None when the link is up."""
        f = self.options.faults
        if f.disconnect_after_s is None:
            return None
        cycle = f.disconnect_after_s + f.disconnect_duration_s
        j = math.floor((t_s - self.t_on - f.disconnect_after_s) / cycle)
        if j < 0:
            return None
        start, end = self._down_window(j)
        return end if start <= t_s < end else None

    def record_outage(self, start_s: float, end_s: float) -> None:
        self.outages_recorded += 1
        self.record(
            {"type": "outage", "device_id": self.device_id, "t_s": start_s, "end_t_s": end_s}
        )

    # -- transport ---------------------------------------------------------------------------
    def next_event_s(self) -> float:
        if self._next_event_s is not None:
            return self._next_event_s
        if self._period_s == 0.0:
            t = min(s.next_completion_s() for s in self.streams)
        else:
            p_miss = self._p_miss
            while True:
                m = self._event_m
                self._event_m += 1
                if not self._draws:
                    # two uniforms per event, drawn in batches (one rng call per 256 events)
                    self._draws = self._tx_rng.random(512).tolist()[::-1]
                jitter = self._draws.pop() * self._jitter_s
                missed = self._draws.pop() < p_miss
                t = self.t_on + self._phase_s + m * self._period_s + jitter
                if missed:
                    self.missed_events += 1
                    continue
                if t > self.last_t_s:
                    break
        self._next_event_s = t
        return t

    def advance(self, t_s: float) -> list[SampleBlock]:
        """Run the device up to the delivery event at `t_s`; the blocks delivered then."""
        self._next_event_s = None
        self.last_t_s = t_s
        for s in self.streams:
            s.advance_to(t_s, None)
        if self.losses:
            self._flush_losses()
        out: list[SampleBlock] = []
        cap = (
            self.options.transport.ble_max_packets_per_event
            if self.options.transport.kind == "ble"
            else None
        )
        for s in self.streams:
            s.deliver(t_s, cap, out)
        return out

    def reconnect(self, t_s: float) -> None:
        """A new connection at `t_s`: what was sampled meanwhile and never sent is lost."""
        self._next_event_s = None
        for s in self.streams:
            s.advance_to(t_s, "outage")
            while s.pending:
                self.loss(s, "outage", s.pending.popleft()[0], s.P)
        self._flush_losses()
        self.last_t_s = t_s
        if self._period_s:
            # the next connection event / USB poll after the reconnection
            m = math.ceil((t_s - self.t_on - self._phase_s) / self._period_s)
            self._event_m = max(self._event_m, m)
