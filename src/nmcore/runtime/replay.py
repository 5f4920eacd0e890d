"""Recordings played back through the live pipeline: `nmcore replay` and `nmcore analyze`
over a recording directory.

A recording keeps each stream's blocks as the pipeline admitted them (absolute index, the
samples as pushed, their host times) but not the order in which blocks of different streams
arrived. Replay feeds every recorded block as one `SampleBlock` whose `host_t_s` are the
recorded host times (so the clock model is bypassed and each sample lands at the index and
time it had live), merging the streams by the host time of each block's last sample: the
order a device's packets arrive in, minus each link's latency. The trial logic is written so
that this order does not change a complete trial's result (it arms and closes on sample
times, not arrival), so a replay with the station file that recorded gives the live trial
results exactly (tests/integration/test_replay.py). What can differ: a trial the live run
closed at shutdown (`quality.incomplete`) saw the ring at the moment of the stop; trials
started or stopped by an MQTT command are not replayed (the commands are not re-applied);
blocks the recorder never got (after a crash, the last <= flush interval) are missing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import logging
import math
import re
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from nmcore.config.load import validate_station
from nmcore.config.models import StationConfig
from nmcore.errors import ConfigError, ProtocolError
from nmcore.hostclock import MonotonicClock
from nmcore.model import SampleBlock, StreamDescriptor
from nmcore.record import Session, open_session
from nmcore.runtime.analyze import AnalyzeSummary, OfflineRun

__all__ = [
    "RecordedBlock",
    "analyze_recording",
    "is_recording",
    "recorded_blocks",
    "recording_session_stamp",
    "replay_recording",
    "replay_streams",
    "station_from_recording",
]

log = logging.getLogger("nmcore.runtime.replay")

FloatArray = npt.NDArray[np.float64]
Out = Callable[[dict[str, Any]], None]

# blocks fed per loop iteration in --fast replay before yielding (the publisher drains then)
FAST_YIELD_BLOCKS = 64
_STAMP = re.compile(r"\d{8}T\d{6}Z")


@dataclass(frozen=True, slots=True)
class RecordedBlock:
    """One recorded block: absolute `first_index`, `data` (n, ch), host times `t_s` (n,)."""

    stream_id: str
    first_index: int
    data: FloatArray
    t_s: FloatArray

    @property
    def last_t_s(self) -> float:
        return float(self.t_s[-1])


def is_recording(path: Path) -> bool:
    """A session directory (holding seg-*.nmrec) or one segment file."""
    if path.is_dir():
        return any(path.glob("seg-*.nmrec"))
    return path.suffix == ".nmrec" and path.is_file()


def recording_session_stamp(session: Session) -> str | None:
    """The daemon's session stamp (the trial-id prefix) from `<stamp>_<station>`."""
    p = session.path if session.path.is_dir() else session.path.parent
    m = _STAMP.match(p.name)
    return m.group(0) if m else None


def replay_streams(session: Session) -> list[StreamDescriptor]:
    """The recorded descriptors, made counter-free: replay numbers samples by their recorded
    absolute index, which never wraps (a raw 8-bit counter would wrap inside a long gap)."""
    return [dataclasses.replace(d, counter_bits=0) for d in session.streams.values()]


def _stream_blocks(session: Session, stream_id: str) -> Iterator[RecordedBlock]:
    sd = session.read_stream(stream_id)
    row = 0
    for b in sd.blocks:
        n = int(b["n"])
        lo, hi = row, row + n
        row = hi
        if n == 0:
            continue
        t = np.ascontiguousarray(sd.t_s[lo:hi])
        if not np.all(np.isfinite(t)):
            continue  # a block without host times cannot be placed (never written live)
        yield RecordedBlock(stream_id, int(b["first_index"]), sd.data[lo:hi], t)


def recorded_blocks(session: Session) -> Iterator[RecordedBlock]:
    """Every recorded block of every stream, merged by the host time of each block's last
    sample (ties: the streams' declaration order)."""
    order = {sid: k for k, sid in enumerate(session.streams)}
    yield from heapq.merge(
        *(_stream_blocks(session, sid) for sid in session.streams),
        key=lambda b: (b.last_t_s, order[b.stream_id]),
    )


def station_from_recording(session: Session) -> tuple[StationConfig, str]:
    """The station file recorded with the session, validated (ConfigError if it no longer
    validates: pass --config)."""
    text = session.config_text
    if not text:
        raise ConfigError(f"{session.path}: no station file recorded; pass --config FILE")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{session.path}: the recorded station file is not TOML ({exc}); pass --config FILE"
        ) from exc
    return validate_station(data, source=f"{session.path} (recorded config)"), text


def _block(rb: RecordedBlock, t_s: FloatArray, arrival_s: float) -> SampleBlock:
    # counter_bits is 0 in `replay_streams`: the counter is the absolute index itself
    return SampleBlock(rb.stream_id, rb.first_index, rb.data, arrival_s, host_t_s=t_s)


def analyze_recording(station: StationConfig, path: Path, out: Out) -> AnalyzeSummary:
    """`nmcore analyze CONFIG RECORDING`: the recording through the station's detectors as
    fast as the machine allows, outputs as `analyze` gives them (published payloads with
    `seq` and `station`, no wall-clock fields). Trial ids carry the recorded session stamp,
    so they equal the live run's. The rings keep `buffer.history_s` as live (the whole
    record when `cop_sway.whole_record` or `detectors.landing` needs it)."""
    t0 = time.perf_counter()
    try:
        session = open_session(path)
    except (OSError, ValueError) as exc:
        raise ProtocolError(f"{path}: not a readable recording: {exc}") from exc
    if not session.integrity.ok:
        log.warning(
            "%s: damaged or torn chunks skipped (%d bytes); see `Session.integrity`",
            path,
            session.integrity.bytes_discarded,
        )
    descriptors = replay_streams(session)
    if not descriptors:
        raise ProtocolError(f"{path}: the recording holds no stream")
    stamp = recording_session_stamp(session) or "analyze"
    summary = AnalyzeSummary(session=stamp)
    whole = station.detectors.landing is not None or (
        station.detectors.cop_sway is not None and station.detectors.cop_sway.whole_record
    )
    blocks = list(recorded_blocks(session))
    summary.parse_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    history_s = station.buffer.history_s
    if whole and blocks:
        span_s = max(b.last_t_s for b in blocks) - min(float(b.t_s[0]) for b in blocks)
        history_s = max(history_s, span_s * 1.01 + 1.0)
    run = OfflineRun(
        station,
        descriptors,
        history_s=history_s,
        session=stamp,
        summary=summary,
        out=out,
        what="invalid detectors for this recording",
    )
    for rb in blocks:
        run.pipeline.ingest(_block(rb, rb.t_s, rb.last_t_s))
    run.finish()
    summary.process_s = time.perf_counter() - t1
    t_first = min((float(b.t_s[0]) for b in blocks), default=0.0)
    t_last = max((b.last_t_s for b in blocks), default=0.0)
    summary.duration_s = t_last - t_first
    for st in run.pipeline.streams.values():
        summary.rows = max(summary.rows, st.counters.samples)
        summary.rate_hz = max(summary.rate_hz, st.desc.rate_hz)
    return summary


async def replay_recording(
    path: Path,
    *,
    station: StationConfig | None = None,
    config_text: str | None = None,
    speed: float | None = 1.0,
    publish: bool = True,
    on_output: Out | None = None,
    state_dir: Path | None = None,
) -> int:
    """Play a recording through a live `Daemon` (publisher, status, live streams) as if the
    devices were streaming. `speed` None: as fast as possible with the recorded host times
    (--fast); otherwise blocks are released at `speed` x real time and their times are moved
    to now + a fixed offset, so dashboards see live-like times (latencies are unchanged; at a
    speed other than 1 the times run ahead of or behind the clock). `station`: the station
    file to use (default: the one recorded). Returns the number of blocks fed."""
    from nmcore.runtime.daemon import Daemon  # the daemon imports drivers: keep it lazy

    if speed is not None and not (speed > 0 and math.isfinite(speed)):
        raise ValueError(f"speed must be a positive number (got {speed})")
    session = open_session(path)
    recorded, recorded_text = station_from_recording(session) if station is None else (None, "")
    if station is None:
        assert recorded is not None
        station, config_text = recorded, recorded_text
    stamp = recording_session_stamp(session)
    same_config = config_text is not None and config_text == session.config_text
    # same station file: the same trial ids as live (a consumer de-duplicates the repeat);
    # another one gives other results, which must not overwrite the recorded ones
    replay_session = stamp if stamp and same_config else None
    if stamp and not same_config:
        replay_session = f"{stamp}-replay"
    clock = MonotonicClock()
    # a replay does not record itself
    station = station.model_copy(
        update={"recording": station.recording.model_copy(update={"enabled": False})}
    )
    daemon = Daemon(
        station,
        clock=clock,
        realtime=True,
        on_output=on_output,
        publish=publish and station.mqtt.enabled,
        state_dir=state_dir,
        config_text=config_text,
        streams=replay_streams(session),
        session=replay_session,
    )
    fed = 0

    async def feed() -> None:
        nonlocal fed
        offset_s: float | None = None
        t0_rec = 0.0
        start_s = clock.now()
        for rb in recorded_blocks(session):
            if speed is None:
                daemon.pipeline.ingest(_block(rb, rb.t_s, rb.last_t_s))
                fed += 1
                if fed % FAST_YIELD_BLOCKS == 0:
                    await asyncio.sleep(0)
                continue
            if offset_s is None:
                t0_rec = rb.last_t_s
                offset_s = start_s - t0_rec
            due_s = start_s + (rb.last_t_s - t0_rec) / speed
            await clock.sleep_until(due_s)
            t = rb.t_s + offset_s
            daemon.pipeline.ingest(_block(rb, t, float(t[-1])))
            fed += 1
        daemon.trials.finish()
        if daemon.sway is not None and daemon.sway.cfg.whole_record:
            daemon.sway.whole_record()
        if daemon.publisher is not None:
            await daemon.publisher.flush(timeout_s=station.mqtt.publish_timeout_s + 5.0)

    await daemon.run(status_every_s=1.0 if on_output is not None else 0.0, feeder=feed)
    return fed
