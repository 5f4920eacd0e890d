"""Recording format: every chunk type round-trips; torn tails and damaged chunks are survived."""

from __future__ import annotations

import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from nmcore.clock import ClockStats
from nmcore.model import ChannelSpec, Event, StreamDescriptor, StreamKind
from nmcore.record import SessionRecorder, open_session, scan_segment
from nmcore.record import format as fmt

CONFIG = '[station]\nid = "lab-1"\n'


class ManualClock:
    """A host clock the test moves by hand."""

    def __init__(self, t_s: float = 100.0) -> None:
        self.t_s = t_s

    def now(self) -> float:
        return self.t_s

    async def sleep_until(self, t_s: float) -> None:
        self.t_s = max(self.t_s, t_s)


EMG = StreamDescriptor(
    "emg",
    "dev-emg",
    StreamKind.EMG,
    2000.0,
    tuple(ChannelSpec(f"m{i}", "uV") for i in range(4)),
    counter_bits=16,
    timestamp_hz=1e6,
    timestamp_bits=32,
)
PLATE = StreamDescriptor(
    "plate",
    "dev-plate",
    StreamKind.FORCE,
    1000.0,
    tuple(ChannelSpec(n, "N") for n in ("fx", "fy", "fz")),
    counter_bits=0,
    timestamp_hz=0.0,
)


def _recorder(tmp_path: Path, **kw: object) -> SessionRecorder:
    return SessionRecorder(
        tmp_path,
        "lab-1",
        CONFIG,
        clock=ManualClock(),
        min_free_mb=0,
        utc_now=lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        **kw,  # type: ignore[arg-type]
    )


def _only_segment(rec: SessionRecorder) -> Path:
    assert rec.session_dir is not None
    (seg,) = sorted(rec.session_dir.glob("seg-*.nmrec"))
    return seg


def test_every_chunk_type_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rec = _recorder(tmp_path)
    rec.declare_stream(EMG)  # float32 by default
    rec.declare_stream(PLATE, dtype="float64")
    emg = rng.normal(size=(100, 4))
    t1 = 10.0 + np.arange(60) * 0.0005
    t2 = 10.03 + np.cumsum(rng.uniform(0.0004, 0.0006, 40))
    valid = np.ones(100, bool)
    valid[[3, 70]] = False
    rec.write_samples(EMG, 0, emg[:60], t1, valid[:60], counter=65530, device_ticks=2**32 - 5)
    rec.write_samples(
        "emg", 60, emg[60:], t2, valid[60:], counter=54, device_ticks=123, ticks_index=-3
    )
    plate = rng.normal(size=(30, 3)) * 700
    t_plate = 10.0 + np.arange(30) / 1000.0
    rec.write_samples(PLATE, 500, plate[:10], t_plate[:10])
    rec.write_samples(PLATE, 515, plate[10:], t_plate[10:])  # 5 samples never arrived
    rec.write_event(Event("perturbation", 10.01, "platform", {"direction": "forward"}))
    result = {"type": "trial_result", "t_s": 10.5, "trial": 3, "latency_ms": [51.5, None]}
    rec.write_event(result)
    stats = ClockStats(12.5, 0.3, 0.8, 0.1, 400, 0, True, effective_rate_hz=2000.02)
    rec.write_clock("dev-emg", stats)
    rec.write_calibration("dev-plate", {"gain": [1.0, 1.01, 0.99], "offset_n": [0.1, 0, 0]})
    rec.close()
    assert rec.recording_state == "closed"

    s = open_session(rec.session_dir)  # type: ignore[arg-type]
    assert s.streams == {"emg": EMG, "plate": PLATE}
    assert s.stream_dtypes == {"emg": "float32", "plate": "float64"}
    assert s.station_id == "lab-1"
    assert s.config_text == CONFIG
    assert s.config_sha256 is not None
    assert len(s.config_sha256) == 64

    idx, t, data, v = s.read_stream("emg")
    np.testing.assert_array_equal(idx, np.arange(100))
    assert t.view(np.int64).tolist() == np.concatenate([t1, t2]).view(np.int64).tolist()
    np.testing.assert_array_equal(data, emg.astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(v, valid)
    blocks = s.read_stream("emg").blocks
    assert blocks["first_index"].tolist() == [0, 60]
    assert blocks["counter"].tolist() == [65530, 54]
    assert blocks["device_ticks"].tolist() == [2**32 - 5, 123]
    assert blocks["ticks_index"].tolist() == [0, -3]
    assert blocks["has_ticks"].tolist() == [1, 1]

    pidx, pt, pdata, pv = s.read_stream("plate")
    np.testing.assert_array_equal(pidx, np.r_[500:510, 515:535])
    np.testing.assert_array_equal(pdata, plate)  # float64 is bit-exact
    np.testing.assert_array_equal(pt, t_plate)
    assert pv.all()
    assert s.read_stream("plate").blocks["has_counter"].tolist() == [0, 0]
    assert s.gaps() == [
        {"stream_id": "plate", "first_index": 510, "missing_samples": 5, "next_t_s": t_plate[10]}
    ]
    assert s.gaps("emg") == []

    assert s.events() == [
        {"type": "perturbation", "t_s": 10.01, "source": "platform", "direction": "forward"},
        result,
    ]
    hist = s.clock_history()
    assert list(hist) == ["dev-emg"]
    assert hist["dev-emg"][0]["stats"]["drift_ppm"] == 12.5
    assert hist["dev-emg"][0]["stats"]["effective_rate_hz"] == 2000.02
    assert s.calibrations()["dev-plate"][0]["data"]["gain"] == [1.0, 1.01, 0.99]
    (seg,) = s.integrity.segments
    assert seg.ok
    assert seg.clean_end
    assert seg.end_reason == "close"
    assert s.integrity.chunks_bad == 0
    assert s.integrity.bytes_discarded == 0


@pytest.mark.parametrize(
    ("t0", "rate_hz", "delta_expected"),
    [(5000.0, 2000.0, True), (86400.0 * 30, 1000.0, True), (1.0, 2000.0, False)],
)
def test_time_delta_encoding_is_bit_exact_or_not_used(
    t0: float, rate_hz: float, delta_expected: bool
) -> None:
    rng = np.random.default_rng(3)
    # jittered, with one step backwards and one repeated time: still bit-exact
    t = t0 + np.cumsum(rng.uniform(0.9, 1.1, 500)) / rate_hz
    t[100] = t[99]
    t[200] = t[199] - 1e-6
    blocks = [fmt.BlockInfo(0, 200, 1, None), fmt.BlockInfo(300, 300, 301, None)]
    data = np.zeros((500, 2), np.float32)
    valid = np.ones(500, bool)
    p = fmt.decode_samples(fmt.encode_samples("s", blocks, data, t, valid))
    assert p.time_encoding == (fmt.TIME_DELTA32 if delta_expected else fmt.TIME_FULL)
    assert p.t_s.view(np.int64).tolist() == t.view(np.int64).tolist()
    np.testing.assert_array_equal(p.indices, np.r_[0:200, 300:600])
    # NaN times (a sample without a clock estimate) come back as the same NaN bits
    t[10] = np.nan
    q = fmt.decode_samples(fmt.encode_samples("s", blocks, data, t, valid))
    assert q.t_s.view(np.int64).tolist() == t.view(np.int64).tolist()
    # a single sample has nothing to take differences of
    one = fmt.decode_samples(
        fmt.encode_samples("s", [fmt.BlockInfo(5, 1, 1, 9)], data[:1], t[:1], valid[:1])
    )
    assert one.time_encoding == fmt.TIME_FULL
    assert one.t_s.tolist() == [t[0]]


def test_chunk_crc_covers_type_length_and_payload() -> None:
    chunk = fmt.encode_chunk(fmt.ChunkType.EVENT, b'{"a":1}')
    magic, ctype, length = struct.unpack_from("<IBI", chunk)
    assert (magic, ctype, length) == (fmt.CHUNK_MAGIC, 4, 7)
    (crc,) = struct.unpack_from("<I", chunk, len(chunk) - 4)
    assert crc == zlib.crc32(chunk[4:-4])
    assert fmt.chunk_at(chunk, 0) == (4, 9, 7)
    for i in range(4, len(chunk)):  # any flipped bit after the magic is caught
        bad = bytearray(chunk)
        bad[i] ^= 0x10
        assert fmt.chunk_at(bytes(bad), 0) is None


def _session_with_chunks(tmp_path: Path, n_flushes: int) -> tuple[SessionRecorder, np.ndarray]:
    rng = np.random.default_rng(7)
    rec = _recorder(tmp_path)
    rec.declare_stream(EMG)
    data = rng.normal(size=(50 * n_flushes, 4)).astype(np.float32)
    for k in range(n_flushes):
        t = 5.0 + (np.arange(50) + 50 * k) / 2000.0
        rec.write_samples("emg", 50 * k, data[50 * k : 50 * (k + 1)], t)
        rec.write_event({"type": "mark", "t_s": float(t[0]), "k": k})
        rec.flush()
    return rec, data


def test_torn_last_chunk_reads_back_up_to_the_previous_chunk(tmp_path: Path) -> None:
    rec, data = _session_with_chunks(tmp_path / "rec", 4)
    # no close(): the last chunk written is the last samples chunk, as after a crash
    seg = _only_segment(rec)
    full = seg.read_bytes()
    good = scan_segment(seg)
    last = good.chunks[-1]
    assert last.ctype == fmt.ChunkType.SAMPLES
    last_start = last.offset - 9  # magic + type + length precede the payload
    assert last.offset + last.length + 4 == len(full)
    n_before = len(good.chunks) - 1
    cut = tmp_path / "cut.nmrec"
    for end in range(last_start, len(full)):
        cut.write_bytes(full[:end])
        res = scan_segment(cut)
        assert len(res.chunks) == n_before, end
        assert res.integrity.bytes_discarded == end - last_start, end
        assert res.integrity.bad_regions == 0
        assert not res.integrity.clean_end
    # and the reader API on one torn copy: the first three flushes are intact
    cut.write_bytes(full[: last_start + (len(full) - last_start) // 2])
    s = open_session(cut)
    idx, _t, got, valid = s.read_stream("emg")
    np.testing.assert_array_equal(idx, np.arange(150))
    np.testing.assert_array_equal(got, data[:150])
    assert valid.all()
    assert [e["k"] for e in s.events()] == [0, 1, 2, 3]  # events precede samples per flush
    assert s.integrity.bytes_discarded == (len(full) - last_start) // 2
    assert not s.integrity.ok


def test_truncated_header_is_reported_not_raised(tmp_path: Path) -> None:
    rec, _ = _session_with_chunks(tmp_path / "rec", 1)
    full = _only_segment(rec).read_bytes()
    header_size = fmt.decode_header(full).size  # type: ignore[union-attr]
    cut = tmp_path / "cut.nmrec"
    for end in range(header_size):
        cut.write_bytes(full[:end])
        s = open_session(cut)
        assert s.streams == {}
        (seg,) = s.integrity.segments
        assert not seg.header_ok
        assert seg.bytes_discarded == end


def _corrupt_chunk(path: Path, k: int, rel: int) -> tuple[int, int]:
    """Flip one byte `rel` bytes into chunk `k` (counted from its magic); return its span."""
    res = scan_segment(path)
    ch = res.chunks[k]
    start, end = ch.offset - 9, ch.offset + ch.length + 4
    buf = bytearray(path.read_bytes())
    buf[start + rel if rel >= 0 else end + rel] ^= 0xFF
    path.write_bytes(bytes(buf))
    return start, end


@pytest.mark.parametrize(
    ("where", "rel"),
    [("payload", 200), ("magic", 1), ("type", 4), ("length", 8), ("crc", -1)],
)
def test_corrupted_middle_chunk_is_skipped_and_reported(
    tmp_path: Path, where: str, rel: int
) -> None:
    rec, data = _session_with_chunks(tmp_path / "rec", 4)
    rec.close()
    seg = _only_segment(rec)
    before = scan_segment(seg)
    # find the samples chunk of the second flush
    k = [i for i, c in enumerate(before.chunks) if c.ctype == fmt.ChunkType.SAMPLES][1]
    start, end = _corrupt_chunk(seg, k, rel)
    s = open_session(seg)
    (integ,) = s.integrity.segments
    assert integ.bad_regions == 1, where
    assert integ.bytes_skipped == end - start
    assert integ.bytes_discarded == 0
    assert integ.chunks_ok == before.integrity.chunks_ok - 1
    assert integ.clean_end  # everything after the damage still reads
    idx, _t, got, _v = s.read_stream("emg")
    keep = np.r_[0:50, 100:200]
    np.testing.assert_array_equal(idx, keep)
    np.testing.assert_array_equal(got, data[keep])


def test_resync_is_not_fooled_by_the_magic_inside_sample_data(tmp_path: Path) -> None:
    magic_as_f32 = np.frombuffer(struct.pack("<I", fmt.CHUNK_MAGIC), np.float32)[0]
    rec = _recorder(tmp_path / "rec")
    rec.declare_stream(EMG)
    data = np.full((64, 4), magic_as_f32, np.float32)
    for k in range(3):
        rec.write_samples("emg", 64 * k, data, np.arange(64) + 64.0 * k)
        rec.flush()
    rec.close()
    seg = _only_segment(rec)
    samples = [
        i for i, c in enumerate(scan_segment(seg).chunks) if c.ctype == fmt.ChunkType.SAMPLES
    ]
    _corrupt_chunk(seg, samples[0], 12)  # break the first samples chunk early
    s = open_session(seg)
    idx, _t, got, _v = s.read_stream("emg")
    np.testing.assert_array_equal(idx, np.arange(64, 192))
    assert (got == np.float64(magic_as_f32)).all()
    assert s.integrity.segments[0].bad_regions == 1


def test_segment_header_round_trip() -> None:
    raw = fmt.encode_header(7, 1_700_000_000_123_456_789, "lab-ü")
    h = fmt.decode_header(raw + b"rest")
    assert h is not None
    assert (h.version, h.segment, h.created_ns, h.station_id, h.size) == (
        fmt.FORMAT_VERSION,
        7,
        1_700_000_000_123_456_789,
        "lab-ü",
        len(raw),
    )
    assert fmt.decode_header(raw[:-1]) is None
    bad = bytearray(raw)
    bad[12] ^= 1
    assert fmt.decode_header(bytes(bad)) is None
